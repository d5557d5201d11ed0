"""`fim-lsp`: a language server that shows the worker's fill-in-the-middle completions.

    editor --LSP (stdio)--> lsp.server --> lsp.service --> lsp.worker_link --ZeroMQ--> fim-server serve

No torch here: the server speaks text and positions, the worker owns the model.
"""
