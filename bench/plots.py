"""PNG plots of a run (matplotlib, Agg backend: no display needed).

  latency.png             end-to-end and engine-only latency per setting (box plots, log scale)
  quality_vs_tpf.png      headline quality against tokens per forward, one point per setting
  quality_vs_latency.png  headline quality (and edit similarity) against p50 latency, one point
                          per setting: where each decoding mode sits on the speed/quality plane
  speedup_vs_threshold.png  AR p50 latency / setting p50 latency against the threshold
  tpf_by_kind.png         tokens per forward per kind of middle (when a run has several kinds)
  modes (bench/modes.py)  edit similarity against p50 latency across suites, a panel per suite
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# `vert=False` is deprecated from Matplotlib 3.10 on, which has `orientation` instead.
HORIZONTAL = {"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10) \
    else {"vert": False}
COLORS = {"ar": "tab:gray", "diffusion": "tab:blue", "speculative": "tab:orange"}
MARKERS = {"ar": "s", "diffusion": "o", "speculative": "^"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # No timestamp in the file: the same records give the same picture.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def latency(rows_by: dict[str, list[dict]], path: Path) -> Path:
    names = [n for n, rows in rows_by.items() if rows]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(names)))
    positions = range(len(names))
    end_to_end = [[r["latency_ms"] for r in rows_by[n]] for n in names]
    engine = [[r["engine_latency_ms"] for r in rows_by[n]] for n in names]
    a = ax.boxplot(end_to_end, positions=[p + 0.18 for p in positions], widths=0.32, **HORIZONTAL,
                   patch_artist=True, showfliers=True)
    b = ax.boxplot(engine, positions=[p - 0.18 for p in positions], widths=0.32, **HORIZONTAL,
                   patch_artist=True, showfliers=True)
    for box in a["boxes"]:
        box.set_facecolor("tab:blue")
    for box in b["boxes"]:
        box.set_facecolor("lightgray")
    ax.set_yticks(list(positions), names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per completion (ms, log scale)")
    ax.legend([a["boxes"][0], b["boxes"][0]], ["end to end (client)", "engine only"], fontsize=8, loc="best")
    ax.set_title("Latency distribution per setting")
    return _save(fig, path)


def quality_vs_tpf(settings: list[dict], metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, s in enumerate(settings):
        x, y = s.get("tokens_per_forward"), s["quality"].get(metric)
        if x is None or y is None:
            continue
        # a legend entry per setting: close points would make annotations unreadable
        ax.scatter([x], [y], color=plt.cm.tab10(k % 10), marker=MARKERS.get(s["engine"], "D"), s=45,
                   label=s["setting"], alpha=0.85)
    if ax.collections:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("tokens per forward pass")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs tokens per forward")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _latency_panel(ax, settings: list[dict], metric: str, colour: dict, title: str) -> None:
    """One point per setting: `metric` against p50 end-to-end latency (log)."""
    for st in settings:
        x, y = st["latency_ms"]["p50"], st["quality"].get(metric)
        if x is not None and y is not None:
            ax.scatter([x], [y], color=colour[st["setting"]], marker=MARKERS.get(st["engine"], "D"), s=50,
                       label=st["setting"], alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per completion, end to end (ms, log)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")


def _shared_legend(axes) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        axes[-1].legend(list(handles.values()), list(handles), fontsize=7, loc="center left",
                        bbox_to_anchor=(1.01, 0.5))


def _colours(names: list[str]) -> dict:
    return {n: plt.cm.tab10(k % 10) for k, n in enumerate(dict.fromkeys(names))}


def quality_vs_latency(settings: list[dict], metric: str, path: Path) -> Path:
    """One panel per metric: the headline one and, when it is another, edit similarity (pass@1
    of weak models is mostly 0, edit similarity still separates the settings)."""
    metrics = [metric] + [m for m in ("edit_similarity",) if m != metric
                          and any(m in s["quality"] for s in settings)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 2.5, 4.5), squeeze=False)
    colour = _colours([s["setting"] for s in settings])
    for ax, m in zip(axes[0], metrics):
        _latency_panel(ax, settings, m, colour, f"{m} vs latency")
    _shared_legend(list(axes[0]))
    return _save(fig, path)


def speedup_vs_threshold(comparison: dict, settings: list[dict], thresholds: dict[str, float], path: Path) -> Path:
    """One line per engine and combination of the other swept options; `thresholds` gives each
    setting's effective threshold (swept or default)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    options = {s["setting"]: s["options"] for s in settings}
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in comparison.get("ratios", []):
        opts = options.get(r["setting"], {})
        rest = " ".join(f"{k}={v}" for k, v in opts.items() if k != "threshold")
        label = f"{r['engine']} {rest}".strip()
        tau = opts.get("threshold", thresholds.get(r["setting"]))
        if tau is not None:
            lines.setdefault(label, []).append((float(tau), 1 / r["latency_ratio_p50"]))
    for label, points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.axhline(1.0, color="tab:gray", linestyle="--", linewidth=1, label="AR baseline")
    ax.set_yscale("log")
    ax.set_xlabel("confidence threshold (tau)")
    ax.set_ylabel("speed-up over AR (AR p50 / setting p50, log)")
    ax.set_title("Speed-up vs threshold")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no AR baseline or no other setting in this run", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def tpf_by_kind(settings: list[dict], path: Path) -> Path:
    kinds = sorted({k for s in settings for k in s["by_kind"]})
    shown = [s for s in settings if s["by_kind"]]
    fig, ax = plt.subplots(figsize=(min(14, 3 + 1.1 * len(shown)), 4.5))
    width = 0.8 / max(1, len(kinds))
    for k, kind in enumerate(kinds):
        heights = [(s["by_kind"].get(kind) or {}).get("tokens_per_forward") or 0 for s in shown]
        ax.bar([i + k * width for i in range(len(shown))], heights, width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shown))], [s["setting"] for s in shown],
                  rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("tokens per forward pass")
    ax.set_title("Tokens per forward by kind of middle")
    ax.legend(fontsize=8)
    return _save(fig, path)


def modes(summaries: list[dict], path: Path) -> Path:
    """Edit similarity (or the headline metric where there is none) against p50 latency, one
    panel per suite; a setting keeps its colour and marker in every panel."""
    colour = _colours([st["setting"] for s in summaries for st in s["settings"]])
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.6 * len(summaries) + 3, 4.3), squeeze=False)
    for ax, s in zip(axes[0], summaries):
        metric = "edit_similarity" if any("edit_similarity" in st["quality"] for st in s["settings"]) \
            else s["quality_metric"]
        _latency_panel(ax, s["settings"], metric, colour,
                       f"{s['suite']} ({max(st['n'] for st in s['settings'])} cases)")
    _shared_legend(list(axes[0]))
    fig.suptitle("Decoding modes: quality vs latency", fontsize=11)
    return _save(fig, path)
