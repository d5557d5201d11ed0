import * as assert from "node:assert/strict";
import { serverCommand, serverSettings } from "../src/settings";

// A ConfigGet over a plain map of the keys under "fim".
const getter = (values: Record<string, unknown>) => (key: string) => values[key];

describe("serverSettings", () => {
  it("sends nothing when the user set nothing, so the server's defaults apply", () => {
    assert.deepEqual(serverSettings(getter({})), {});
  });

  it("nests worker keys and keeps the server's names", () => {
    const settings = serverSettings(
      getter({
        "worker.address": "tcp://127.0.0.1:7001",
        "worker.threads": 1,
        "worker.arModel": "/models/ar",
        spawnWorker: false,
        debounceMs: 20,
        maxLines: 3,
        engine: { max_tokens: 16, engine: "speculative" },
        enabled: { "*": true, markdown: false },
      }),
    );
    assert.deepEqual(settings, {
      worker: { address: "tcp://127.0.0.1:7001", threads: 1, arModel: "/models/ar" },
      spawnWorker: false,
      debounceMs: 20,
      maxLines: 3,
      engine: { max_tokens: 16, engine: "speculative" },
      enabled: { "*": true, markdown: false },
    });
  });

  it("leaves out client-only keys", () => {
    const settings = serverSettings(getter({ enable: false, "server.path": "/x/fim-lsp", maxLines: 2 }));
    assert.deepEqual(settings, { maxLines: 2 });
  });
});

describe("serverCommand", () => {
  it("defaults to fim-lsp on PATH", () => {
    assert.deepEqual(serverCommand(getter({})), { command: "fim-lsp", args: [] });
  });

  it("takes a path and arguments", () => {
    const got = serverCommand(getter({ "server.path": " /venv/bin/fim-lsp ", "server.args": ["-v"] }));
    assert.deepEqual(got, { command: "/venv/bin/fim-lsp", args: ["-v"] });
  });

  it("reports bad values instead of throwing", () => {
    assert.match((serverCommand(getter({ "server.path": "" })) as { error: string }).error, /fim\.server\.path/);
    assert.match((serverCommand(getter({ "server.args": [1] })) as { error: string }).error, /fim\.server\.args/);
  });
});
