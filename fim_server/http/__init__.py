"""`fim-server http`: the completion APIs editors already speak, in front of the resident worker.

One asyncio process (aiohttp) translates each API's request into one worker request over
ZeroMQ (`fim_server.wire.client.WorkerClient`) and the reply back into that API's shape:

| module | its one job |
| --- | --- |
| `config.py` | `HttpConfig` (a dataclass), its flags, the bind rule (non-loopback needs an API key) |
| `body.py` | reading a body: size, JSON, typed fields (a 4xx naming the field, never a crash) |
| `job.py` | `FimJob`: what every API's request becomes; decoding options through wire/options.py |
| `fimtokens.py` | a raw prompt with FIM tokens (Qwen, StarCoder, Code Llama, DeepSeek, Codestral) split |
| `completer.py` | the one path to the worker: duplicates joined, newest per client wins, disconnects cancel |
| `worker.py` | the link to the worker: connect, or start `fim-server serve` when none answers locally |
| `llamacpp.py` | llama.cpp `POST /infill`, `GET /health` (llama.vim, llama.vscode) |
| `openai.py` | `POST /v1/completions` (OpenAI + suffix; Tabby's with `segments`), `/v1/fim/completions` |
| `tabby.py` | Tabby's completion body and reply, `POST /v1/events` |
| `ollama.py` | `POST /api/generate` (+ suffix), `POST /api/show`, `GET /api/tags` |
| `context.py` | what handlers share: the app's context, the client key, compact JSON, SSE, health |
| `app.py` | routes, auth and error middleware, serving (`serve`, `command`) |

No torch here: the process that speaks HTTP never loads a model.
"""
