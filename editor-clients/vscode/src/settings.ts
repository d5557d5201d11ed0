// From the editor's "fim.*" configuration to what fim-lsp takes. Pure: no `vscode` import, so the
// unit tests run under plain Node.

// Reads one key under the "fim" section; `vscode.WorkspaceConfiguration.get` fits.
export type ConfigGet = (key: string) => unknown;

// The settings object fim-lsp reads from initializationOptions and didChangeConfiguration
// (names from lsp/settings.py). Only keys the user set a value for are sent, so the server's
// own defaults stay in one place.
export interface ServerSettings {
  worker?: { address?: string; timeoutMs?: number; model?: string | null; arModel?: string | null; threads?: number };
  spawnWorker?: boolean;
  debounceMs?: number;
  maxLines?: number;
  engine?: Record<string, unknown>;
  enabled?: Record<string, boolean>;
}

const WORKER_KEYS = ["address", "timeoutMs", "model", "arModel", "threads"] as const;
const TOP_KEYS = ["spawnWorker", "debounceMs", "maxLines", "engine", "enabled"] as const;

export function serverSettings(get: ConfigGet): ServerSettings {
  const out: Record<string, unknown> = {};
  const worker: Record<string, unknown> = {};
  for (const key of WORKER_KEYS) {
    const value = get(`worker.${key}`);
    if (value !== undefined) {
      worker[key] = value;
    }
  }
  if (Object.keys(worker).length > 0) {
    out.worker = worker;
  }
  for (const key of TOP_KEYS) {
    const value = get(key);
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out as ServerSettings;
}

export interface ServerCommand {
  command: string;
  args: string[];
}

// fim.server.path / fim.server.args, with a clear message instead of a crash for bad values.
export function serverCommand(get: ConfigGet): ServerCommand | { error: string } {
  const path = get("server.path") ?? "fim-lsp";
  const args = get("server.args") ?? [];
  if (typeof path !== "string" || path.trim() === "") {
    return { error: "fim.server.path must be the fim-lsp executable (a name on PATH or a full path)" };
  }
  if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) {
    return { error: "fim.server.args must be a list of strings" };
  }
  return { command: path.trim(), args };
}
