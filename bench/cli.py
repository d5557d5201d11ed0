"""fim-bench: diffusion vs autoregressive FIM, latency and quality, through real workers.

    fim-bench run --suite humaneval-single --engines diffusion,ar --sweep threshold=0.5,0.7,0.9 \\
        --limit 200 --out bench/results/humaneval-single
    fim-bench run --suite repo --engines diffusion,ar --limit 100 --out results/repo
    fim-bench run --suite humaneval-single --setting ar --setting diffusion \\
        --setting 'diffusion early_commit=0.5' --setting 'diffusion unmask=eb' --setting speculative --out results/modes
    fim-bench run --suite safim --data ../shared/data/safim --engines diffusion,ar --out results/safim
    fim-bench report results/repo            # re-render summary.json / summary.md / *.png from the JSONL

A re-run with the same --out resumes: finished cases are skipped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

QUICK_LIMIT = 10
QUICK_MAX_TOKENS = 32
DEFAULT_MAX_TOKENS = 64


class UsageError(Exception):
    pass


def _connect_map(specs: list[str]) -> dict[str, str]:
    """["diffusion=ipc:///a", "tcp://127.0.0.1:5555"] -> engine -> address; a bare address is
    asked which engine it runs."""
    from fim_server.wire.client import RequestFailed, SyncWorkerClient, WorkerUnavailable
    from fim_server.wire.options import ENGINES

    found: dict[str, str] = {}
    for spec in specs:
        engine, sep, address = spec.partition("=")
        if not sep or engine not in ENGINES:
            address = spec
            try:
                with SyncWorkerClient(address) as client:
                    engine = client.stats(deadline_s=10).get("engine")
            except (RequestFailed, WorkerUnavailable) as exc:
                raise UsageError(f"--connect {address}: no worker answers ({exc})") from None
        if engine in found:
            raise UsageError(f"--connect: two workers for the {engine} engine")
        found[engine] = address
    return found


def cmd_run(args: argparse.Namespace) -> int:
    from bench import harness, report
    from bench.settings import build_settings, parse_settings, parse_sweep
    from bench.suites import SuiteArgs, load_cases

    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    max_tokens = args.max_tokens or (QUICK_MAX_TOKENS if args.quick else DEFAULT_MAX_TOKENS)
    if args.setting and (args.sweep or args.engines):
        raise UsageError("--setting names whole settings; leave out --engines and --sweep")
    try:
        if args.setting:
            settings = parse_settings(args.setting, {"max_tokens": max_tokens})
        else:
            settings = build_settings([e.strip() for e in (args.engines or "diffusion,ar").split(",") if e.strip()],
                                      parse_sweep(args.sweep), {"max_tokens": max_tokens})
        cases = load_cases(args.suite, SuiteArgs(data=args.data, repo=args.repo, limit=limit, seed=args.seed))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = harness.RunConfig(
        suite=args.suite, settings=tuple(settings), out=Path(args.out), base_options={"max_tokens": max_tokens},
        connect=_connect_map(args.connect), model=args.model, ar_model=args.ar_model, block_model=args.block_model, threads=args.threads,
        deadline_s=args.deadline, score_workers=args.score_workers, note=args.note, parallel=args.parallel,
        args={k: v for k, v in vars(args).items() if k != "func"})
    print(f"{args.suite}: {len(cases)} cases x {len(settings)} settings -> {config.out}", file=sys.stderr)
    try:
        errors = harness.run(config, cases)
    except harness.HarnessError as exc:
        raise UsageError(str(exc)) from None
    summary = report.render(config.out)
    print(report.markdown(summary))
    if errors:
        print(f"fim-bench: {errors} case(s) ended in an error; run again with the same --out to retry them",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report

    try:
        summary = report.render(args.dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(report.markdown(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bench.suites import SUITES

    parser = argparse.ArgumentParser(prog="fim-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a suite through the workers, write JSONL, summary and plots")
    p.add_argument("--suite", required=True, choices=list(SUITES))
    p.add_argument("--engines", default=None, help="comma-separated: diffusion, ar, speculative (default: diffusion,ar)")
    p.add_argument("--limit", type=int, default=None,
                   help="fixed sets: this many evenly spaced cases; sampled suites: this many cases")
    p.add_argument("--quick", action="store_true",
                   help=f"a small slice: --limit {QUICK_LIMIT} and --max-tokens {QUICK_MAX_TOKENS} unless given")
    p.add_argument("--model", default=None, help="diffusion checkpoint (default: the bundled one)")
    p.add_argument("--ar-model", default=None, help="AR checkpoint (default: the bundled AR twin)")
    p.add_argument("--block-model", default=None, help="block-diffusion checkpoint (default: the bundled one)")
    p.add_argument("--connect", action="append", default=[], metavar="[ENGINE=]ADDR",
                   help="use a running worker instead of starting one (repeat per engine)")
    p.add_argument("--sweep", action="append", default=[], metavar="OPTION=V1,V2",
                   help="decoding option values to run, e.g. threshold=0.5,0.7,0.9 (repeatable)")
    p.add_argument("--setting", action="append", default=[], metavar="'ENGINE [OPTION=V ...]'",
                   help="one setting to run, e.g. 'diffusion early_commit=0.5' (repeatable; "
                        "instead of --engines/--sweep)")
    p.add_argument("--data", default=None, help="data path of humaneval-released, safim, santacoder")
    p.add_argument("--repo", default=None, help="source tree of repo / structure (default: pinned PyPI projects)")
    p.add_argument("--out", required=True, help="results directory (re-using it resumes)")
    p.add_argument("--max-tokens", type=int, default=None, help=f"middle tokens at most (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the started workers (0: torch's default)")
    p.add_argument("--parallel", type=int, default=1,
                   help="workers started per engine, each sent one case at a time (e.g. one per core)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of repo / structure")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds per request")
    p.add_argument("--note", default=None, help="a line for the report, e.g. what else the machine was doing")
    p.add_argument("--score-workers", type=int, default=0, help="parallel sandbox runs (0: one per core)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="re-render summary.json, summary.md and the plots from DIR's JSONL")
    p.add_argument("dir")
    p.set_defaults(func=cmd_report)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    # `kill` stops a run as Ctrl-C does: the workers it started stop too, finished cases are kept
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"fim-bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fim-bench: interrupted; finished cases are kept, run again with the same --out to resume",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)

if __name__ == "__main__":
    sys.exit(main())
