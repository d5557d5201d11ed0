"""Decoding modes across suites: one table and one plot from several fim-bench result directories.

    python -m bench.modes bench/results/modes-humaneval-single bench/results/modes-humaneval-multi \\
        bench/results/modes-repo --plot bench/results/modes.png > bench/results/modes.md

Each directory is a `fim-bench run` with the same settings (e.g. `--setting ar --setting
diffusion --setting 'diffusion unmask=eb eb_gamma=30' --setting speculative`); its summary.json
is read as written (run `fim-bench report DIR` first to refresh it). Per suite and setting: the
headline quality, edit similarity, p50 latency, p50 ratio to AR and to plain diffusion on the
same cases, tokens per forward, and for speculative the share of AR forwards saved and the
mean draft tokens accepted per AR verification.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import plots


def load(dirs: list[str]) -> list[dict]:
    summaries = []
    for d in dirs:
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing; run `fim-bench report {d}` first")
        summaries.append(json.loads(path.read_text()))
    return summaries


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def table(summaries: list[dict]) -> str:
    lines = ["| suite | setting | n | quality | edit sim. | p50 ms | x AR p50 | x diffusion p50 | tokens/fwd "
             "| AR fwd saved | accepted / verification |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        metric = s["quality_metric"]
        ratios = {r["setting"]: r for r in s["comparison"].get("ratios", [])}
        plain = s["comparison"].get("plain_diffusion")
        for st in s["settings"]:
            r = ratios.get(st["setting"], {})
            vs_ar = "1" if st["engine"] == "ar" else _f(r.get("latency_ratio_p50"), 2)
            vs_plain = "1" if st["setting"] == plain else _f(r.get("diffusion_ratio_p50"), 2)
            saved = r.get("ar_forwards_saved")
            quality = st["quality"].get(metric)
            lines.append(
                f"| {s['suite']} | {st['setting']} | {st['n']} | {metric} {_f(quality)} | "
                f"{_f(st['quality'].get('edit_similarity'))} | {_f(st['latency_ms']['p50'], 0)} | {vs_ar} | "
                f"{vs_plain if st['engine'] != 'ar' else '-'} | {_f(st['tokens_per_forward'], 2)} | "
                f"{_f(100 * saved, 0) + '%' if saved is not None else '-'} | "
                f"{_f(st['engine_stats'].get('acceptance_length_mean'), 2)} |")
    return "\n".join(lines) + "\n"


LEGEND_KEYS = ("block_size", "cache", "kv_shift", "unmask", "threshold")


def legend(summaries: list[dict]) -> str:
    """What the plain `diffusion` setting meant in each run: the engine defaults change over time
    (block 32 -> 8, kv_shift), so a ratio "x diffusion" is only readable with them."""
    lines = []
    for s in summaries:
        plain = s["comparison"].get("plain_diffusion")
        config = next((c["config"] for c in s.get("setting_configs", []) if c["setting"] == plain), None)
        if config is None:
            continue
        # kv_shift is absent from runs made before the option existed: those ran without it
        parts = [f"{k} {'off' if config.get(k) in (None, False) else 'on' if config.get(k) is True else config[k]}"
                 for k in LEGEND_KEYS]
        lines.append(f"- {s['suite']}: `{plain}` = {', '.join(parts)}")
    if not lines:
        return ""
    return "\nThe plain setting in each run (the engine defaults when it was made):\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="fim-bench result directories")
    parser.add_argument("--plot", default=None, help="write edit similarity vs p50 latency, a panel per suite, here")
    args = parser.parse_args(argv)
    try:
        summaries = load(args.dirs)
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"bench.modes: {exc}", file=sys.stderr)
        return 2
    print(table(summaries) + legend(summaries), end="")
    if args.plot:
        plots.modes(summaries, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
