"""What the front-ends and the worker share, and nothing heavier: the protocol (messages,
encode/decode), the decoding options and their one parser, addresses, the client, worker
spawning and typed-ahead reuse. No torch here: the language server imports only this package."""
