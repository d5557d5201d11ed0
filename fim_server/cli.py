"""`fim-server` command line: complete, serve (the resident worker), http (its HTTP front-end), status,
models, keys, infill, train."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

from .wire.addresses import DEFAULT_ADDRESS
from .wire.options import ENGINES, DecodeConfig, OptionError, add_arguments, from_arguments, given_arguments

MAX_INPUT_BYTES = 8 * 1024 * 1024       # larger documents are refused, not loaded


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def read_text(path: Optional[str], what: str) -> str:
    if path is None:
        return ""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"{what} file {path} does not exist or is not a file")
        if p.stat().st_size > MAX_INPUT_BYTES:
            raise UsageError(f"{what} file {path} is larger than {MAX_INPUT_BYTES} bytes")
        data = p.read_bytes()
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{what} is larger than {MAX_INPUT_BYTES} bytes")
    if b"\x00" in data:
        raise UsageError(f"{what} looks binary (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def pick_engine(args: argparse.Namespace) -> str:
    """--engine as given; else the engine the family of --model runs on (a Dream checkpoint: the
    canvas engine); else the default engine, for the bundled model."""
    if args.engine:
        return args.engine
    if args.model in (None, "", "bundled"):
        return DecodeConfig.engine
    from .models.loader import model_kind

    try:
        return model_kind(args.model, args.family)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {args.model}: {exc}") from None


def decode_config(args: argparse.Namespace, base: Optional[DecodeConfig] = None) -> DecodeConfig:
    """`base` (DecodeConfig's defaults when None) with the decoding flags given on the command line."""
    try:
        return from_arguments(args, base)
    except OptionError as exc:
        raise UsageError(str(exc)) from None


def cmd_complete(args: argparse.Namespace) -> int:
    prefix = read_text(args.prefix_file, "prefix")
    suffix = read_text(args.suffix_file, "suffix")
    config = decode_config(args)          # checked before anything loads
    if args.connect:
        return complete_remote(args, prefix, suffix, config)
    from .engine import InfillRequest, load_engine
    from .models.loader import resolve_model

    args.engine = pick_engine(args)
    model, random_weights = resolve_model(args.model, args.engine)
    extra = {}
    if args.engine == "speculative":      # the AR verifier next to the diffusion drafter
        extra["ar_model"], ar_random = resolve_model(args.ar_model, "ar")
        random_weights = random_weights or ar_random
    try:
        engine = load_engine(args.engine, model, device=args.device, dtype=args.dtype, family=args.family, **extra)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {model or 'bundled'}: {exc}") from None
    config = decode_config(args, engine.default_config())     # the family's published defaults, then the flags
    result = engine.infill([InfillRequest(prefix, suffix, "cli")], config)[0]
    print_completion(args, result.text, {
        **result.stats.to_dict(), "model": engine.lm.source, "family": engine.lm.family.name,
        "device": str(engine.lm.device), "random_weights": random_weights})
    return 0


def print_completion(args: argparse.Namespace, text: str, stats: dict) -> None:
    if args.json:
        print(json.dumps({"completion": text, **stats}))
        return
    sys.stdout.write(text)
    if sys.stdout.isatty():
        sys.stdout.write("\n")


def connect_options(args: argparse.Namespace) -> dict:
    """WorkerClient keyword arguments from --curve-server-key / --curve-secret-key."""
    if (args.curve_server_key is None) != (args.curve_secret_key is None):
        raise UsageError("--curve-server-key and --curve-secret-key go together")
    return {"curve_server_key": args.curve_server_key, "curve_secret_key": args.curve_secret_key}


def complete_remote(args: argparse.Namespace, prefix: str, suffix: str, config: DecodeConfig) -> int:
    """complete --connect: the worker's model answers; only the options given on the command line
    are sent (--engine too, when given), so the worker's engine and defaults apply otherwise."""
    from .wire.client import RequestFailed, SyncWorkerClient, WorkerUnavailable

    options = {k: v for k, v in given_arguments(args).items() if k not in ("max_tokens", "single_line")}
    with SyncWorkerClient(args.connect, **connect_options(args)) as client:
        try:
            reply = client.infill(prefix, suffix, options=options, max_tokens=config.max_tokens,
                                  single_line=config.single_line, deadline_s=args.timeout)
        except RequestFailed as exc:
            print(f"fim-server: worker error: {exc}", file=sys.stderr)
            return 1
        except WorkerUnavailable as exc:
            print(f"fim-server: {exc}", file=sys.stderr)
            return 1
    if reply.cancelled:
        print("fim-server: the request was cancelled", file=sys.stderr)
        return 1
    stats = {k: v for k, v in reply.stats.items() if k not in ("engine_latency_ms",)}
    print_completion(args, reply.text, stats)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .wire.curve import InsecureBind, check_bind

    logging.getLogger("fim_server.worker").setLevel(logging.INFO)   # warm-up and ready lines
    try:
        check_bind(args.bind, args.curve_secret_key, args.curve_public_keys)
    except (InsecureBind, ValueError) as exc:      # before loading anything: fail fast
        raise UsageError(str(exc)) from None
    for name in ("max_batch", "queue"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_wait_ms < 0:
        raise UsageError("--batch-wait-ms must not be negative")
    if args.idle_exit < 0:
        raise UsageError("--idle-exit must not be negative")
    if args.parent_pid is not None and args.parent_pid < 1:
        raise UsageError("--parent-pid must be a process id (1 or more)")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from .models.loader import resolve_model
    from .worker.server import ServeError, WorkerOptions, serve

    args.engine = pick_engine(args)
    model, random_weights = resolve_model(args.model, args.engine)
    ar_model = None
    if args.engine == "speculative":      # the AR verifier next to the diffusion drafter
        ar_model, ar_random = resolve_model(args.ar_model, "ar")
        random_weights = random_weights or ar_random
    options = WorkerOptions(bind=args.bind, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                            queue=args.queue, curve_secret_key=args.curve_secret_key,
                            curve_public_keys=args.curve_public_keys, idle_exit_s=args.idle_exit,
                            parent_pid=args.parent_pid)
    try:
        rc = serve(options, model, args.engine, device=args.device, dtype=args.dtype,
                   family=args.family, random_weights=random_weights, ar_model=ar_model)
    except ServeError as exc:
        raise UsageError(str(exc)) from None
    # The worker has drained and closed its sockets; nothing is left to write. Tearing down the
    # interpreter with a model loaded takes 1-3 s on a CPU, which whoever stops the worker
    # (fim-lsp at shutdown, fim-bench, a supervisor) would wait for: leave at once instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def cmd_http(args: argparse.Namespace) -> int:
    from .http.app import command

    return command(args, UsageError)


def cmd_status(args: argparse.Namespace) -> int:
    from .wire.client import RequestFailed, SyncWorkerClient, WorkerUnavailable

    with SyncWorkerClient(args.connect, **connect_options(args)) as client:
        try:
            stats = client.stats(deadline_s=args.timeout)
        except (RequestFailed, WorkerUnavailable) as exc:
            print(f"fim-server: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(stats, indent=2 if sys.stdout.isatty() else None))
    return 0


ENGINE_PATHS = {"diffusion": "canvas", "block": "block", "ar": "ar"}   # Family.kind -> the engine that runs it


def model_families() -> list[dict]:
    """Every family: where it comes from, the engine path it takes, the published layouts that
    load as it, and its decoding defaults."""
    from .models.family import FAMILIES
    from .models.layouts import LAYOUTS          # the package loads every lineage's layouts

    rows = []
    for name, family in FAMILIES.items():
        mapped = sorted(layout.name for layout in LAYOUTS.values()
                        if name in (layout.family, *(f for _, f in layout.variants)))
        source = "bundled" if name.startswith("fim-tiny") else "published" if mapped else "transformers"
        rows.append({"family": name, "source": source, "engine": ENGINE_PATHS[family.kind], "layouts": mapped,
                     "defaults": dict(family.defaults), "description": family.description})
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_families()
    if args.json:
        print(json.dumps(rows, indent=2 if sys.stdout.isatty() else None))
        return 0
    print(f"{'family':<18} {'source':<12} {'engine':<7} {'layouts':<18} defaults")
    for row in rows:
        defaults = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in row["defaults"].items()) or "-"
        print(f"{row['family']:<18} {row['source']:<12} {row['engine']:<7} {', '.join(row['layouts']) or '-':<18} "
              f"{defaults}")
        print(f"    {row['description']}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .wire.curve import make_keys

    public, secret = make_keys(args.out, args.name)
    print(json.dumps({"public": public, "secret": secret}))
    return 0


def cmd_infill(args: argparse.Namespace) -> int:
    from .batch.command import command

    decode_config(args)                   # checked before anything loads
    args.engine = pick_engine(args)
    return command(args, decode_config(args, family_defaults(args)), UsageError)


def family_defaults(args: argparse.Namespace) -> DecodeConfig:
    """The options the worker would start from for --model (or the bundled model) on --engine:
    the family's published settings (engine.base.published_defaults), read without the weights."""
    from .engine.base import published_defaults
    from .models.loader import identify, resolve_model, resolve_source

    model, _ = resolve_model(args.model, args.engine)
    try:
        ckpt = identify(resolve_source(model, args.engine), args.family, kind=args.engine)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {model or 'bundled'}: {exc}") from None
    return published_defaults(args.engine, ckpt.family, ckpt.config)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import recipe as train

    return train.main(args)


DTYPE_HELP = ("auto | float32 | bfloat16 | float16 (default auto: bfloat16 on CUDA and on a CPU with bf16 units, "
              "float32 on other CPUs)")


def add_decode_options(p: argparse.ArgumentParser) -> None:
    """The model flags and a flag per decoding option (wire.options.add_arguments)."""
    p.add_argument("--model", default=None, help="local directory or hub id (default: the bundled model)")
    p.add_argument("--family", default=None, help="model family when it cannot be detected")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when present)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--ar-model", default=None, help="speculative: the AR verifier (default: the bundled AR twin)")
    add_arguments(p)


def add_curve_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--curve-server-key", default=None, metavar="FILE", help="the worker's public .key file")
    p.add_argument("--curve-secret-key", default=None, metavar="FILE", help="this client's .key_secret file")


def build_parser(with_train_options: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fim-server", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("complete", help="fill the middle between a prefix and a suffix file")
    p.add_argument("--prefix-file", required=True, help="text before the cursor ('-' for stdin)")
    p.add_argument("--suffix-file", default=None, help="text after the cursor")
    p.add_argument("--json", action="store_true", help="print one JSON object with the stats")
    p.add_argument("--connect", default=None, metavar="ADDR",
                   help="ask a running worker (fim-server serve) instead of loading a model")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the worker")
    add_curve_client_options(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("serve", help="run the resident worker (ZeroMQ ROUTER, msgpack frames)")
    p.add_argument("--model", default=None, help="local directory or hub id (default: the bundled model)")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help=f"default: the engine --model's family runs on; {DecodeConfig.engine} for the bundled model")
    p.add_argument("--ar-model", default=None, help="speculative: the AR verifier (default: the bundled AR twin)")
    p.add_argument("--family", default=None, help="model family when it cannot be detected")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when present)")
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--bind", default=DEFAULT_ADDRESS,
                   help="tcp://127.0.0.1:PORT or ipc://PATH; other addresses need CURVE keys")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request waits for batch mates")
    p.add_argument("--queue", type=int, default=64, help="queued requests at most; more get `busy`")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--curve-secret-key", default=None, metavar="FILE", help="the worker's .key_secret file")
    p.add_argument("--curve-public-keys", default=None, metavar="DIR", help="directory of allowed client *.key files")
    p.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                   help="exit (as on SIGTERM) after this long with no request (default 0: never)")
    p.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                   help="exit (as on SIGTERM) once process PID is gone: a spawner's crash ends its worker")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("http", help="HTTP front-end of the worker: llama.cpp /infill, OpenAI and Mistral FIM, "
                                    "Tabby, Ollama (default http://127.0.0.1:8012)")
    from .http.config import add_arguments as add_http_arguments
    add_http_arguments(p)
    p.set_defaults(func=cmd_http)

    p = sub.add_parser("status", help="print a running worker's stats as JSON")
    p.add_argument("--connect", required=True, metavar="ADDR")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the worker")
    add_curve_client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("models", help="the model families: engine path, published layouts, decoding defaults")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per family")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("keys", help="generate a CURVE key pair (NAME.key and NAME.key_secret)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--name", default="worker", help="file name stem (default: worker)")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("infill", help="fill every hole (<FILL>) in files or JSONL tasks, batched; locally or on Ray")
    from .batch.command import add_arguments as add_infill_arguments
    add_infill_arguments(p)
    add_decode_options(p)
    p.set_defaults(func=cmd_infill)

    p = sub.add_parser("train", help="train a bundled-size model from scratch (diffusion or ar)")
    if with_train_options:   # train.py imports torch and transformers: seconds that status should not pay
        from .train.recipe import add_arguments
        add_arguments(p)
    p.set_defaults(func=cmd_train)
    return parser


def loads_model(args: argparse.Namespace) -> bool:
    """Whether this command imports transformers (status, keys and --connect stay light)."""
    return args.command in ("complete", "serve", "train", "infill") and not getattr(args, "connect", None)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(with_train_options=command == "train").parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore")
    if not args.verbose and loads_model(args):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"fim-server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`fim-server ... | head`): stop quietly, as the Python docs advise,
        # with stdout pointed at /dev/null so that the exit's flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
