"""The summary of a run, computed from its JSONL records alone (so `fim-bench report` gives the
same summary as the run that wrote them).

Per setting: latency p50/p95/p99 end to end (at the client) and engine only (from the reply
stats), mean forward passes, tokens per forward (all tokens / all forwards), tokens per second
(all tokens / all engine seconds), quality metrics, the engine's own extra stats, and the
same per kind of case. Then the comparison with the AR baseline, on the cases both finished:
the latency ratio of every other setting, and "at equal quality": the fastest setting of each
engine whose headline quality is at least the baseline's, or a plain statement that none is.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import numpy as np

from bench import records
from bench.settings import COMMON

METRICS = ("pass@1", "first_line_em", "exact_match", "edit_similarity", "parses")
EXTRA_STATS = ("steps", "early_commits", "ar_forwards", "draft_forwards", "acceptance_length", "drafts_accepted",
               "prompt_tokens", "truncated")
BASELINE = "ar"


def _r(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), digits)


def percentiles(values: list[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return {"p50": _r(p50, 2), "p95": _r(p95, 2), "p99": _r(p99, 2), "mean": _r(np.mean(values), 2)}


def quality(rows: list[dict]) -> dict[str, float]:
    found = {}
    for metric in METRICS:
        values = [float(r[metric]) for r in rows if r.get(metric) is not None]
        if values:
            found[metric] = _r(np.mean(values))
    return found


def speed(rows: list[dict]) -> dict[str, Any]:
    nfe = sum(r.get("nfe") or 0 for r in rows)
    tokens = sum(r.get("tokens") or 0 for r in rows)
    seconds = sum(r.get("engine_latency_ms") or 0 for r in rows) / 1000
    return {"latency_ms": percentiles([r["latency_ms"] for r in rows]),
            "engine_latency_ms": percentiles([r["engine_latency_ms"] for r in rows]),
            "nfe_mean": _r(nfe / len(rows), 2) if rows else None,
            "tokens_mean": _r(tokens / len(rows), 2) if rows else None,
            "tokens_per_forward": _r(tokens / nfe) if nfe else None,
            "tokens_per_s": _r(tokens / seconds, 2) if seconds else None}


def extra_stats(rows: list[dict]) -> dict[str, float]:
    found = {}
    for key in EXTRA_STATS:
        values = [float((r.get("stats") or {}).get(key) or 0) for r in rows]
        if any(values):
            found[key + "_mean"] = _r(np.mean(values))
    return found


def setting_summary(name: str, rows: list[dict], errors: int) -> dict[str, Any]:
    first = rows[0] if rows else {}
    kinds = sorted({r["kind"] for r in rows})
    by_kind = {k: {"n": len(kr), **speed(kr), "quality": quality(kr)}
               for k in kinds for kr in [[r for r in rows if r["kind"] == k]]} if len(kinds) > 1 else {}
    return {"setting": name, "engine": first.get("engine"), "options": first.get("options", {}), "n": len(rows),
            "errors": errors, **speed(rows), "quality": quality(rows),
            "stop_reasons": dict(sorted(Counter(r.get("stop_reason") for r in rows).items())),
            "engine_stats": extra_stats(rows), "by_kind": by_kind}


# ---------------------------------------------------------------- comparison


def _baseline_for(setting: dict, baselines: list[dict]) -> Optional[dict]:
    """The AR setting run with the same common options (max_tokens, ...), else the first."""
    common = {k: v for k, v in setting["options"].items() if k in COMMON}
    return next((b for b in baselines if b["options"] == common), baselines[0] if baselines else None)


def _paired(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[dict], list[dict]]:
    ids = {r["case_id"] for r in rows_a} & {r["case_id"] for r in rows_b}
    key = lambda r: r["case_id"]     # noqa: E731
    return sorted((r for r in rows_a if r["case_id"] in ids), key=key), sorted((r for r in rows_b if r["case_id"] in ids), key=key)


def _plain_diffusion(settings: list[dict]) -> Optional[dict]:
    """The diffusion setting with no decoding option of its own (only common ones like max_tokens)."""
    return next((s for s in settings if s["engine"] == "diffusion"
                 and not [k for k in s["options"] if k not in COMMON]), None)


def _against_plain(s: dict, plain: Optional[dict], rows_by: dict[str, list[dict]]) -> dict[str, Any]:
    """p50 latency ratio against plain diffusion on the cases both finished; speculative: AR
    forwards per case against the AR baseline's forwards on the same cases."""
    found: dict[str, Any] = {}
    if plain is not None and s is not plain:
        mine, theirs = _paired(rows_by[s["setting"]], rows_by[plain["setting"]])
        if mine:
            found["diffusion_ratio_p50"] = _r(speed(mine)["latency_ms"]["p50"] / speed(theirs)["latency_ms"]["p50"], 3)
    return found


def _ar_forwards(mine: list[dict], theirs: list[dict]) -> dict[str, Any]:
    spec = np.mean([float((r.get("stats") or {}).get("ar_forwards") or 0) for r in mine])
    alone = np.mean([float(r.get("nfe") or 0) for r in theirs])
    return {"ar_forwards_mean": _r(spec, 2), "baseline_forwards_mean": _r(alone, 2),
            "ar_forwards_saved": _r(1 - spec / alone, 3) if alone else None}


def compare(settings: list[dict], rows_by: dict[str, list[dict]], metric: str) -> dict[str, Any]:
    baselines = [s for s in settings if s["engine"] == BASELINE]
    if not baselines:
        return {"baseline": None, "note": "no AR baseline in this run: no ratios"}
    plain = _plain_diffusion(settings)
    ratios = []
    for s in settings:
        base = _baseline_for(s, baselines)
        if s["engine"] == BASELINE or base is None:
            continue
        mine, theirs = _paired(rows_by[s["setting"]], rows_by[base["setting"]])
        if not mine:
            continue
        lat, base_lat = speed(mine), speed(theirs)
        ratios.append({
            "setting": s["setting"], "engine": s["engine"], "baseline": base["setting"], "n_paired": len(mine),
            "latency_ratio_p50": _r(lat["latency_ms"]["p50"] / base_lat["latency_ms"]["p50"], 3),
            "engine_latency_ratio_p50": _r(lat["engine_latency_ms"]["p50"] / base_lat["engine_latency_ms"]["p50"], 3),
            "latency_ratio_mean": _r(lat["latency_ms"]["mean"] / base_lat["latency_ms"]["mean"], 3),
            "quality": quality(mine).get(metric), "baseline_quality": quality(theirs).get(metric),
            "latency_p50_ms": lat["latency_ms"]["p50"], "baseline_latency_p50_ms": base_lat["latency_ms"]["p50"],
            **_against_plain(s, plain, rows_by), **(_ar_forwards(mine, theirs) if s["engine"] == "speculative" else {})})
    return {"baseline": BASELINE, "plain_diffusion": plain["setting"] if plain else None, "metric": metric, "ratios": ratios, "at_equal_quality": at_equal_quality(ratios, metric)}


def at_equal_quality(ratios: list[dict], metric: str) -> dict[str, dict]:
    """Per engine: the fastest setting with quality >= the baseline's on the same cases."""
    answer = {}
    for engine in dict.fromkeys(r["engine"] for r in ratios):
        mine = [r for r in ratios if r["engine"] == engine and r["quality"] is not None]
        good = [r for r in mine if r["quality"] >= r["baseline_quality"]]
        if good:
            best = min(good, key=lambda r: r["latency_ratio_p50"])
            caveat = "; both score 0, so this says nothing about quality" if best["quality"] == 0 else ""
            answer[engine] = {"setting": best["setting"], "latency_ratio_p50": best["latency_ratio_p50"],
                              "quality": best["quality"], "baseline_quality": best["baseline_quality"],
                              "statement": f"fastest {engine} setting at or above the AR baseline's {metric}: "
                                           f"{best['setting']} ({best['quality']} vs {best['baseline_quality']}), "
                                           f"{best['latency_ratio_p50']}x the AR p50 latency{caveat}"}
        elif mine:
            top = max(mine, key=lambda r: r["quality"])
            answer[engine] = {"setting": None, "statement": f"no {engine} setting reaches the AR baseline's {metric} "
                              f"({top['baseline_quality']}); the best is {top['setting']} with {top['quality']}"}
    return answer


# ---------------------------------------------------------------- the whole summary


def summarize(all_records: list[dict]) -> dict[str, Any]:
    headers = records.runs(all_records)
    if not headers:
        raise ValueError("no run record in the JSONL: not a fim-bench results file")
    last = headers[-1]
    rows = records.latest_cases(all_records)
    order = list(dict.fromkeys([s["setting"] for h in headers for s in h.get("settings", [])] + [r["setting"] for r in rows]))
    ok_by = {name: [r for r in rows if r["setting"] == name and not r.get("error")] for name in order}
    errors = Counter(r["setting"] for r in rows if r.get("error"))
    settings = [setting_summary(name, ok_by[name], errors[name]) for name in order if ok_by[name] or errors[name]]
    metric = last.get("quality", "pass@1")
    return {
        "suite": last["suite"], "quality_metric": metric, "machine": last.get("machine"), "models": last.get("models"),
        "versions": last.get("versions"), "worker_threads": last.get("worker_threads"),
        "workers_per_engine": list(dict.fromkeys(h.get("workers_per_engine") or 1 for h in headers)),
        "base_options": last.get("base_options"), "setting_configs": last.get("settings"),
        "notes": list(dict.fromkeys(h["note"] for h in headers if h.get("note"))),
        "runs": [{k: h.get(k) for k in ("started", "cases", "args")} for h in headers],
        "cases": len({r["case_id"] for r in rows}), "settings": settings,
        "comparison": compare(settings, ok_by, metric),
    }
