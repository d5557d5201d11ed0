"""Render a run directory from its JSONL records: summary.json, summary.md and the PNG plots.

`fim-bench report DIR` calls `render(DIR)`; a run calls it when it ends. Nothing but the
JSONL is read, so the two give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from bench import plots, records
from bench.summary import summarize

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def _machine(m: Optional[dict]) -> str:
    if not m:
        return "unknown machine"
    where = m.get("gpu") or f"{m.get('cpu')} ({m.get('cores')} cores)"
    return f"{where}; Python {m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}"


def _parallel(counts: list[int]) -> str:
    """'' for one worker per engine throughout; else how many, per resumed run in order."""
    return "" if counts == [1] else "; workers per engine: " + " then ".join(map(str, counts))


def _models(models: Optional[dict]) -> list[str]:
    return [f"- {engine}: `{info.get('model')}` (sha256 {info.get('weights_sha256')}, {info.get('device')}"
            f"{', RANDOM WEIGHTS' if info.get('random_weights') else ''})" for engine, info in (models or {}).items()]


def _main_table(summary: dict) -> list[str]:
    metric = summary["quality_metric"]
    ratios = {r["setting"]: r for r in summary["comparison"].get("ratios", [])}
    ratio = {name: r["latency_ratio_p50"] for name, r in ratios.items()}
    plain = summary["comparison"].get("plain_diffusion")
    extra = " x diffusion p50 |" if plain else ""
    lines = [f"| setting | n | {metric} | p50 ms | p95 ms | p99 ms | engine p50 ms | NFE | tokens/forward | tokens/s | x AR p50 |{extra}",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if plain else "")]
    for s in summary["settings"]:
        lat, eng = s["latency_ms"], s["engine_latency_ms"]
        errors = f" ({s['errors']} errors)" if s["errors"] else ""
        lines.append(f"| {s['setting']} | {s['n']}{errors} | {_fmt(s['quality'].get(metric))} | {_ms(lat['p50'])} | "
                     f"{_ms(lat['p95'])} | {_ms(lat['p99'])} | {_ms(eng['p50'])} | {_fmt(s['nfe_mean'], 1)} | "
                     f"{_fmt(s['tokens_per_forward'], 2)} | {_fmt(s['tokens_per_s'], 1)} | "
                     f"{_fmt(ratio.get(s['setting']), 2) if s['engine'] != 'ar' else '1'} |")
        if plain:
            vs_plain = "1" if s["setting"] == plain else _fmt(ratios.get(s["setting"], {}).get("diffusion_ratio_p50"), 2)
            lines[-1] += f" {vs_plain if s['engine'] != 'ar' else '-'} |"
    return lines


def _speculative(summary: dict) -> list[str]:
    lines = []
    for r in summary["comparison"].get("ratios", []):
        if r.get("ar_forwards_mean") is not None:
            saved = r.get("ar_forwards_saved")
            lines.append(f"- {r['setting']}: {r['ar_forwards_mean']} AR forwards per case against "
                         f"{r['baseline_forwards_mean']} for AR alone on the same cases "
                         f"({_fmt(100 * saved, 1) if saved is not None else '-'}% saved).")
    return lines


def _other_metrics(summary: dict) -> list[str]:
    metrics = list(dict.fromkeys(m for s in summary["settings"] for m in s["quality"]))
    stats = list(dict.fromkeys(k for s in summary["settings"] for k in s["engine_stats"]))
    if not metrics and not stats:
        return []
    lines = ["| setting | " + " | ".join(metrics + stats) + " | stop reasons |",
             "| --- |" + " --- |" * (len(metrics) + len(stats) + 1)]
    for s in summary["settings"]:
        cells = [_fmt(s["quality"].get(m)) for m in metrics] + [_fmt(s["engine_stats"].get(k), 2) for k in stats]
        reasons = ", ".join(f"{k} {v}" for k, v in s["stop_reasons"].items())
        lines.append(f"| {s['setting']} | " + " | ".join(cells) + f" | {reasons} |")
    return lines


def _by_kind(summary: dict) -> list[str]:
    kinds = list(dict.fromkeys(k for s in summary["settings"] for k in s["by_kind"]))
    if not kinds:
        return []
    metric = summary["quality_metric"]
    lines = ["| setting | " + " | ".join(f"{k}: tok/fwd, {metric}, n" for k in kinds) + " |",
             "| --- |" + " --- |" * len(kinds)]
    for s in summary["settings"]:
        cells = []
        for k in kinds:
            b = s["by_kind"].get(k) or {}
            cells.append(f"{_fmt(b.get('tokens_per_forward'), 2)}, {_fmt((b.get('quality') or {}).get(metric))}, {b.get('n', 0)}")
        lines.append(f"| {s['setting']} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict) -> str:
    comparison = summary["comparison"]
    out = [f"# fim-bench: {summary['suite']}", "",
           f"Machine: {_machine(summary['machine'])}; torch threads per worker: {summary.get('worker_threads') or 'default'}"
           f"{_parallel(summary.get('workers_per_engine') or [1])}.",
           f"Cases: {summary['cases']}. Quality: {summary['quality_metric']}. "
           f"Request options for every setting: {json.dumps(summary.get('base_options') or {})}.",
           f"Versions: {json.dumps(summary.get('versions') or {})}.",
           *(f"Note: {note}" for note in summary.get("notes") or []), "", "Models:", *_models(summary["models"]), "",
           *_main_table(summary), ""]
    if comparison.get("baseline"):
        out.append("Latency ratios are setting / AR at p50, end to end, on the cases both finished "
                   "(above 1: slower than AR).")
        if comparison.get("plain_diffusion"):
            out[-1] = out[-1][:-1] + f"; x diffusion: the same against `{comparison['plain_diffusion']}`."
        for engine, answer in comparison.get("at_equal_quality", {}).items():
            out.append(f"- At equal quality ({engine}): {answer['statement']}.")
        out += _speculative(summary)
    else:
        out.append(comparison.get("note", ""))
    extra = _other_metrics(summary)
    kinds = _by_kind(summary)
    if extra:
        out += ["", "All quality metrics and engine stats (means per case):", "", *extra]
    if kinds:
        out += ["", "By kind of middle:", "", *kinds]
    return "\n".join(out) + "\n"


def render(out_dir: str | Path) -> dict:
    """Rebuild summary.json, summary.md and the plots in out_dir from its JSONL; returns the summary."""
    out_dir = Path(out_dir)
    all_records = records.read_records(out_dir / records.FILE)
    if not all_records:
        raise ValueError(f"{out_dir / records.FILE}: missing or empty; nothing to report")
    summary = summarize(all_records)
    (out_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / SUMMARY_MD).write_text(markdown(summary))
    rows = [r for r in records.latest_cases(all_records) if not r.get("error")]
    rows_by = {s["setting"]: [r for r in rows if r["setting"] == s["setting"]] for s in summary["settings"]}
    plots.latency(rows_by, out_dir / "latency.png")
    plots.quality_vs_tpf(summary["settings"], summary["quality_metric"], out_dir / "quality_vs_tpf.png")
    plots.quality_vs_latency(summary["settings"], summary["quality_metric"], out_dir / "quality_vs_latency.png")
    thresholds = {c["setting"]: c["config"].get("threshold") for c in summary.get("setting_configs") or []}
    plots.speedup_vs_threshold(summary["comparison"], summary["settings"], thresholds,
                               out_dir / "speedup_vs_threshold.png")
    if any(s["by_kind"] for s in summary["settings"]):
        plots.tpf_by_kind(summary["settings"], out_dir / "tpf_by_kind.png")
    return summary
