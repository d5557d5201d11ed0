// Status bar text and the stats report from fim-lsp's `fim/stats` answer. Pure, unit-tested.

export const STATS_METHOD = "fim/stats";

// The part of the fim/stats answer shown here (lsp/telemetry.py has the full list).
export interface ServerStats {
  shown?: number;
  accepted?: number;
  cancelled?: number;
  unavailable?: number;
  acceptance_rate?: number | null;
  latency_ms?: { p50?: number | null; p95?: number | null; window?: number };
  worker?: { address?: string; state?: string };
}

function ms(value: number | null | undefined): string {
  return typeof value === "number" ? `${Math.round(value)} ms` : "-";
}

export type ServerState = "starting" | "running" | "stopped";

// "fim 212 ms 3/10": the editor's last round trip, accepted/shown; or what keeps it from working.
export function statusText(
  stats: ServerStats | undefined,
  lastMs: number | undefined,
  enabled: boolean,
  state: ServerState = "running",
): string {
  if (state === "starting") {
    return "$(sync~spin) fim starting";
  }
  if (state === "stopped") {
    return "$(error) fim: no server";
  }
  if (!enabled) {
    return "$(circle-slash) fim off";
  }
  if (!stats) {
    return lastMs === undefined ? "$(sparkle) fim" : `$(sparkle) fim ${ms(lastMs)}`;
  }
  return `$(sparkle) fim ${ms(lastMs)} ${stats.accepted ?? 0}/${stats.shown ?? 0}`;
}

export function statsReport(stats: ServerStats, lastMs: number | undefined): string[] {
  const shown = stats.shown ?? 0;
  const accepted = stats.accepted ?? 0;
  const rate = shown > 0 ? Math.round((100 * accepted) / shown) : 0;
  const latency = stats.latency_ms ?? {};
  const lines = [
    `suggestions shown ${shown}, accepted ${accepted} (${rate}%), cancelled ${stats.cancelled ?? 0}`,
    `latency: last ${ms(lastMs)} (editor round trip), p50 ${ms(latency.p50)}, p95 ${ms(latency.p95)} (server)`,
  ];
  if (stats.worker) {
    lines.push(`worker: ${stats.worker.address ?? "?"} (${stats.worker.state ?? "?"})`);
  }
  if ((stats.unavailable ?? 0) > 0) {
    lines.push(`worker unavailable for ${stats.unavailable} request(s)`);
  }
  return lines;
}
