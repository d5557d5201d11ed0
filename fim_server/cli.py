"""`fim-server` command line: complete, train (serve, status, keys and infill come with the worker)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

from .config import CACHE_MODES, ENGINES, LENGTH_POLICIES, UNMASK_RULES, DecodeConfig

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


def decode_config(args: argparse.Namespace) -> DecodeConfig:
    try:
        return DecodeConfig(
            engine=args.engine, cache=args.cache, threshold=args.threshold, block_size=args.block_size,
            single_line=args.single_line, max_tokens=args.max_tokens, unmask=args.unmask,
            factor=args.factor, length=args.length, temperature=args.temperature, seed=args.seed,
            initial_length=args.initial_length,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def random_fallback(kind: str) -> str:
    """A randomly initialised checkpoint, for when the bundled weights are not there yet."""
    from .models.random_init import build_random_checkpoint

    name = "fim-tiny-dlm" if kind == "diffusion" else "fim-tiny-ar"
    path = Path.home() / ".cache" / "fim-server" / f"random-{name}"
    if not (path / "config.json").exists():
        build_random_checkpoint(path, name, hidden=128, layers=2, vocab_size=1024)
    return str(path)


def cmd_complete(args: argparse.Namespace) -> int:
    prefix = read_text(args.prefix_file, "prefix")
    suffix = read_text(args.suffix_file, "suffix")
    config = decode_config(args)
    from .engine import InfillRequest, load_engine
    from .models.loader import bundled_path

    model, random_weights = args.model, False
    if model is None and not (bundled_path(args.engine) / "config.json").exists():
        model, random_weights = random_fallback(args.engine), True
        print(f"warning: no bundled {args.engine} model: using RANDOM WEIGHTS from {model}", file=sys.stderr)
    try:
        engine = load_engine(args.engine, model, device=args.device, dtype=args.dtype, family=args.family)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {model or 'bundled'}: {exc}") from None
    result = engine.infill([InfillRequest(prefix, suffix, "cli")], config)[0]
    if args.json:
        out = {"completion": result.text, **result.stats.to_dict(),
               "model": engine.lm.source, "family": engine.lm.family.name,
               "device": str(engine.lm.device), "random_weights": random_weights}
        print(json.dumps(out))
    else:
        sys.stdout.write(result.text)
        if sys.stdout.isatty():
            sys.stdout.write("\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train

    return train.main(args)


def add_decode_options(p: argparse.ArgumentParser) -> None:
    d = DecodeConfig()
    p.add_argument("--engine", choices=ENGINES, default=d.engine)
    p.add_argument("--model", default=None, help="local directory or hub id (default: the bundled model)")
    p.add_argument("--family", default=None, help="model family when it cannot be detected")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when present)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: by device)")
    p.add_argument("--cache", choices=CACHE_MODES, default=d.cache)
    p.add_argument("--unmask", choices=UNMASK_RULES, default=d.unmask)
    p.add_argument("--threshold", type=float, default=d.threshold)
    p.add_argument("--factor", type=float, default=d.factor)
    p.add_argument("--block-size", type=int, default=d.block_size)
    p.add_argument("--length", choices=LENGTH_POLICIES, default=d.length)
    p.add_argument("--initial-length", type=int, default=d.initial_length)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--single-line", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fim-server", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("complete", help="fill the middle between a prefix and a suffix file")
    p.add_argument("--prefix-file", required=True, help="text before the cursor ('-' for stdin)")
    p.add_argument("--suffix-file", default=None, help="text after the cursor")
    p.add_argument("--json", action="store_true", help="print one JSON object with the stats")
    add_decode_options(p)
    p.set_defaults(func=cmd_complete)

    from .train import add_arguments
    p = sub.add_parser("train", help="train a bundled-size model from scratch (diffusion or ar)")
    add_arguments(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore")
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


if __name__ == "__main__":
    sys.exit(main())
