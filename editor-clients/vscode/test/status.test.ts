import * as assert from "node:assert/strict";
import { statsReport, statusText } from "../src/status";

describe("statusText", () => {
  it("says off when suggestions are off", () => {
    assert.equal(statusText({ shown: 3 }, 10, false), "$(circle-slash) fim off");
  });

  it("says when the server is starting or could not start", () => {
    assert.equal(statusText(undefined, undefined, true, "starting"), "$(sync~spin) fim starting");
    assert.equal(statusText({ shown: 1 }, 5, true, "stopped"), "$(error) fim: no server");
  });

  it("shows the last round trip and accepted/shown", () => {
    assert.equal(statusText(undefined, undefined, true), "$(sparkle) fim");
    assert.equal(statusText(undefined, 41.6, true), "$(sparkle) fim 42 ms");
    assert.equal(statusText({ shown: 10, accepted: 3 }, 212.4, true), "$(sparkle) fim 212 ms 3/10");
    assert.equal(statusText({}, undefined, true), "$(sparkle) fim - 0/0");
  });
});

describe("statsReport", () => {
  it("gives counts, rate and the server's percentiles", () => {
    const lines = statsReport({ shown: 4, accepted: 1, cancelled: 2, latency_ms: { p50: 100, p95: 300.4 } }, 12);
    assert.deepEqual(lines, [
      "suggestions shown 4, accepted 1 (25%), cancelled 2",
      "latency: last 12 ms (editor round trip), p50 100 ms, p95 300 ms (server)",
    ]);
  });

  it("names the worker and the requests it could not answer", () => {
    const worker = { address: "tcp://127.0.0.1:5555", state: "down" };
    const lines = statsReport({ shown: 0, unavailable: 2, latency_ms: { p50: null, p95: null }, worker }, undefined);
    assert.deepEqual(lines, [
      "suggestions shown 0, accepted 0 (0%), cancelled 0",
      "latency: last - (editor round trip), p50 -, p95 - (server)",
      "worker: tcp://127.0.0.1:5555 (down)",
      "worker unavailable for 2 request(s)",
    ]);
  });
});
