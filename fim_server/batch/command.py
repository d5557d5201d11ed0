"""`infill()`: the whole job, from paths and tasks to outputs and a summary; `command()`: the
`fim-server infill` subcommand around it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

from fim_server.wire.options import DecodeConfig
from .inputs import Inputs, load_tasks, scan
from .journal import Journal, atomic_write, remove_stale_temps
from .outputs import FileWriter, count, emit, hole_messages, hole_records, print_summary, truncated, unified_diff
from .run import FAILED, FILLED, SKIPPED, InfillJob, InfillOptions, LocalRunner, Runner, make_units

STATE_DIR = ".fim-infill"         # journal.jsonl + summary.json; under --out when there is one


def fingerprint(kind: str, model: Optional[str], family: Optional[str], dtype: Optional[str],
                config: DecodeConfig, **more) -> str:
    """What, besides the text, decides a fill: part of every journal key. A local model directory
    is named by its path and its weight files' sizes and times, so retrained weights at the same
    path are not mistaken for the old ones."""
    return json.dumps({"engine": kind, "model": model, "weights": weights_identity(model), "family": family,
                       "dtype": dtype, "config": config.to_dict(), **more}, sort_keys=True)


def weights_identity(model: Optional[str]) -> list:
    """[(file, size, mtime_ns)] of a local checkpoint's weights; [] for a hub id."""
    if not model or not Path(model).is_dir():
        return []
    files = sorted(p for p in Path(model).iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def read_inputs(paths: list[Path], tasks: Optional[Path], options: InfillOptions) -> Inputs:
    exclude = [d for d in (options.out_dir, options.state_dir) if d is not None]
    inputs = scan(paths, options.marker, options.max_file_bytes, exclude)
    if tasks is not None:
        inputs.tasks, problems = load_tasks(tasks, options.max_file_bytes)
        inputs.problems += problems
    return inputs


def clean_targets(inputs: Inputs, options: InfillOptions) -> None:
    """Temporary files a killed run left in the directories this run writes to."""
    dirs = set()
    for f in inputs.files:
        if options.in_place:
            dirs.add(f.path.parent)
        if options.out_dir is not None:
            dirs.add((options.out_dir / f.rel).parent)
    for d in sorted(dirs):
        remove_stale_temps(d)


def infill(paths: list[Path], tasks: Optional[Path], runner: Runner, fp: str,
           options: InfillOptions) -> dict:
    """Fill every hole under `paths` and every task in `tasks`; returns the summary."""
    t0 = time.perf_counter()
    inputs = read_inputs(paths, tasks, options)
    journal = Journal(options.state_dir / "journal.jsonl" if options.state_dir else None)
    clean_targets(inputs, options)
    writer = FileWriter(options)
    units = make_units(inputs)
    job = InfillJob(units, runner, fp, options, journal, on_unit_done=writer)
    job.run()
    emit(options.diff, unified_diff(units))
    emit(options.jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in hole_records(units)))
    summary = make_summary(inputs, units, job, writer, journal, time.perf_counter() - t0)
    if options.state_dir is not None:
        path = options.state_dir / "summary.json"
        atomic_write(path, (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        summary["summary_path"] = str(path)
    return summary


def make_summary(inputs: Inputs, units: list, job: InfillJob, writer: FileWriter, journal: Journal,
                 elapsed_s: float) -> dict:
    filled = count(units, FILLED)
    return {
        "holes": {"total": sum(u.n_holes for u in units), "filled": filled, "skipped": count(units, SKIPPED),
                  "failed": count(units, FAILED), "truncated": truncated(units)},
        "files": {"scanned": inputs.scanned, "with_holes": len(inputs.files), "written": len(writer.written),
                  "left_as_is_all_holes_failed": len(writer.untouched), "skipped_binary": inputs.skipped_binary},
        "tasks": len(inputs.tasks),
        "bad_inputs": len(inputs.problems),
        "requests_computed": job.computed,          # distinct requests: identical holes are decoded once
        "time_s": round(elapsed_s, 3),
        "engine_s": round(job.engine_s, 3),        # decoding + journal + writes (Ray: replica start-up too)
        "holes_per_s": round(filled / job.engine_s, 3) if job.engine_s else 0.0,
        "batch": job.options.batch,
        "problems": [p.to_dict() for p in inputs.problems],
        "hole_messages": hole_messages(units),
        "journal": str(journal.path) if journal.path else None,
        "journal_torn_lines": journal.torn,
        "fingerprint": json.loads(job.fingerprint),
    }


# ---------------------------------------------------------------- the subcommand

def options_from_args(args: argparse.Namespace, usage_error) -> InfillOptions:
    if args.in_place and args.out:
        raise usage_error("--in-place and --out are exclusive: pick one")
    if not args.paths and not args.tasks:
        raise usage_error("nothing to fill: give PATHS with holes and/or --tasks FILE")
    if args.batch < 1:
        raise usage_error("--batch must be at least 1")
    if not args.marker:
        raise usage_error("--marker must not be empty")
    diff, jsonl = args.diff, args.jsonl
    if args.paths and not (args.in_place or args.out or diff or jsonl):
        diff = "-"                   # nothing asked for: show what would change
    if args.tasks and jsonl is None:
        jsonl = "-"
    if diff == "-" and jsonl == "-":
        raise usage_error("--diff and --jsonl cannot both go to stdout; give one a file")
    out = Path(args.out) if args.out else None
    state = Path(args.state) if args.state else (out / STATE_DIR if out else Path(STATE_DIR))
    return InfillOptions(marker=args.marker, batch=args.batch, max_file_bytes=args.max_file_bytes,
                         in_place=args.in_place, out_dir=out, diff=diff, jsonl=jsonl, state_dir=state,
                         progress=not args.no_progress)


def command(args: argparse.Namespace, config: DecodeConfig, UsageError: type[Exception]) -> int:
    """`fim-server infill`: the cli parsed the flags into `config`; bad input raises UsageError."""
    options = options_from_args(args, UsageError)
    spec = engine_spec(args)
    fp = fingerprint(spec["kind"], spec["model"], spec["family"], spec["dtype"], config,
                     **({"ar_model": spec["ar_model"]} if "ar_model" in spec else {}))
    runner = _ray_runner(args, spec, config, UsageError) if args.ray else _local_runner(args, spec, config, UsageError)
    try:
        summary = infill([Path(p) for p in args.paths], Path(args.tasks) if args.tasks else None,
                         runner, fp, options)
    except OSError as exc:               # the output side failed (disk full, permissions)
        raise UsageError(f"cannot write results: {exc}") from None
    finally:
        getattr(runner, "close", lambda: None)()
    print_summary(summary)
    return 1 if summary["holes"]["failed"] or summary["problems"] else 0


def engine_spec(args: argparse.Namespace) -> dict:
    """load_engine's keyword arguments, models resolved as `complete` resolves them (the bundled
    model by path; the speculative engine also takes its AR verifier)."""
    from fim_server.models.loader import bundled_path, resolve_model

    model, _ = resolve_model(args.model, args.engine)
    spec = {"kind": args.engine, "model": model or str(bundled_path(args.engine)), "family": args.family,
            "dtype": args.dtype, "device": args.device}
    if args.engine == "speculative":
        ar_model, _ = resolve_model(getattr(args, "ar_model", None), "ar")
        spec["ar_model"] = ar_model or str(bundled_path("ar"))
    return spec


def _local_runner(args, spec: dict, config, usage_error) -> LocalRunner:
    from fim_server.engine import load_engine

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        engine = load_engine(**spec)
    except (OSError, ValueError) as exc:
        raise usage_error(f"cannot load model {spec['model']}: {exc}") from None
    return LocalRunner(engine, config)


def _ray_runner(args, spec: dict, config, usage_error):
    try:
        from .ray_runner import RayRunner, connect
    except ImportError as exc:
        raise usage_error(f"--ray needs Ray: pip install 'fim-server[ray]' ({exc})") from None
    try:
        connect(args.ray)
    except Exception as exc:             # noqa: BLE001 - Ray raises several kinds here
        raise usage_error(f"cannot reach Ray at {args.ray!r}: {exc}") from None
    try:
        return RayRunner(spec, config, replicas=args.ray_replicas, cpus_per_replica=args.ray_cpus)
    except (RuntimeError, ValueError) as exc:
        raise usage_error(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The infill options (decoding options come from the cli's add_decode_options)."""
    p.add_argument("paths", nargs="*", metavar="PATHS", help="files or directories with holes")
    p.add_argument("--marker", default="<FILL>", help="the hole marker, inline or on a line of its own")
    p.add_argument("--tasks", default=None, metavar="FILE", help='JSONL of {"id", "prefix", "suffix"} tasks')
    p.add_argument("--in-place", action="store_true", help="rewrite the files (atomically)")
    p.add_argument("--out", default=None, metavar="DIR", help="write filled files under DIR (the inputs' tree)")
    p.add_argument("--diff", nargs="?", const="-", default=None, metavar="FILE",
                   help="unified diff to FILE or stdout (the default when no other output is asked for)")
    p.add_argument("--jsonl", default=None, metavar="FILE", help="one record per hole with stats ('-': stdout)")
    p.add_argument("--state", default=None, metavar="DIR",
                   help=f"journal and summary (default: OUT/{STATE_DIR} with --out, else ./{STATE_DIR})")
    p.add_argument("--batch", type=int, default=8, help="holes per engine call (sorted by length)")
    p.add_argument("--max-file-bytes", type=int, default=1 << 20, help="larger files are reported and skipped")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: ADDRESS, 'auto' (the running cluster) or 'local' (start one)")
    p.add_argument("--ray-replicas", type=int, default=None,
                   help="model replicas (default: one per GPU; 1 on a CPU-only cluster)")
    p.add_argument("--ray-cpus", type=int, default=1, help="CPUs per replica on a CPU-only cluster")


__all__ = ["infill", "fingerprint", "command", "add_arguments", "STATE_DIR"]
