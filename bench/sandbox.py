"""Run untrusted, model-written Python and report whether it ran to the end.

Each program runs in its own `python -I -B` subprocess, in a fresh temporary directory
that is removed afterwards, with a clean environment and its own process group (killed as a
whole on timeout). The program text reaches the child through an unlinked temporary file
passed as an extra descriptor, so stdin carries only the program's own input. Inside the child, `_sandbox_guard.py` sets the resource limits and an
audit hook that refuses network access, new processes and writes outside that directory.

The limits are set by the child itself rather than in a `preexec_fn`: scoring runs many
programs from a thread pool, and `preexec_fn` is documented as unsafe with threads (the
forked child can deadlock on a lock another thread held).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from bench.cases import FimCase

GUARD_SOURCE = (Path(__file__).parent / "_sandbox_guard.py").read_text()
MEMORY_BYTES = 1 << 30
FILE_SIZE_BYTES = 16 << 20  # also caps captured stdout/stderr, which go to files
HUMANEVAL_TIMEOUT_S = 3.0
TAIL_BYTES = 4000

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class ExecResult:
    """passed: ran to the end. failed: raised (e.g. a test assertion) or exited early.
    timeout: wall-clock or CPU limit hit. error: did not compile, or was killed by a
    signal (memory, file size, crash)."""

    passed: bool
    status: Status
    detail: str
    output: str = ""  # what the program printed (nonce removed); only with capture_output


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _kill_group(pid: int) -> None:
    # The child leads its own session, so this also reaches anything it managed to start.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(returncode: int, stdout: str, stderr: str, nonce: str) -> ExecResult:
    last_error_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if returncode == 0 and stdout.rstrip().endswith(nonce):
        return ExecResult(True, "passed", "", stdout.rstrip()[: -len(nonce)])
    if returncode == 0:
        return ExecResult(False, "failed", "exited before the program finished")
    if returncode == 2:
        return ExecResult(False, "error", f"does not compile: {last_error_line}")
    if returncode == -signal.SIGXCPU:
        return ExecResult(False, "timeout", "CPU time limit")
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else f"signal {-returncode}"
        return ExecResult(False, "error", f"killed by {name}: {last_error_line}".rstrip(": "))
    return ExecResult(False, "failed", last_error_line or f"exit status {returncode}")


def _command(timeout_s: float, payload_fd: int) -> list[str]:
    # -I: ignore PYTHON* variables, user site-packages and the script directory; -B: no .pyc.
    cpu_seconds = int(timeout_s) + 1
    return [sys.executable, "-I", "-B", "-c", GUARD_SOURCE, str(MEMORY_BYTES), str(cpu_seconds),
            str(FILE_SIZE_BYTES), str(payload_fd)]


def _run_in(workdir: Path, source: str, timeout_s: float, stdin: str, capture_output: bool) -> ExecResult:
    nonce = secrets.token_hex(16)
    # A clean environment: no inherited secrets, and temp files land in the sandbox dir.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
    # Output goes to files, not pipes, so a chatty program cannot fill our memory;
    # RLIMIT_FSIZE caps their size. The payload file is unlinked already (TemporaryFile) and
    # the guard closes it before the program runs.
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err, \
            tempfile.TemporaryFile() as payload:
        payload.write((nonce + "\n" + source).encode("utf-8", errors="replace"))
        payload.flush()
        payload.seek(0)
        proc = subprocess.Popen(
            _command(timeout_s, payload.fileno()), cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out,
            stderr=err, start_new_session=True, pass_fds=(payload.fileno(),),
        )
        timed_out = False
        try:
            proc.communicate(stdin.encode("utf-8", errors="replace"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # On timeout this stops the program; otherwise it removes stragglers, if any.
            _kill_group(proc.pid)
            proc.wait()
    if timed_out:
        return ExecResult(False, "timeout", f"no result after {timeout_s:g} s")
    stdout = (workdir / "stdout").read_bytes().decode("utf-8", errors="replace") if capture_output \
        else _read_tail(workdir / "stdout")
    return _classify(proc.returncode, stdout, _read_tail(workdir / "stderr"), nonce)


def run_program(source: str, timeout_s: float = 3.0, stdin: str = "", capture_output: bool = False) -> ExecResult:
    """Run `source` as a script in the sandbox; passed only if it finishes without error.

    stdin: the program's input. capture_output: keep all it printed (up to the file size
    limit) in ExecResult.output; otherwise only a tail is read, to classify the outcome.
    """
    workdir = Path(tempfile.mkdtemp(prefix="fim-sandbox-"))
    try:
        return _run_in(workdir, source, timeout_s, stdin, capture_output)
    except OSError as e:
        return ExecResult(False, "error", f"sandbox failure: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def humaneval_program(case: FimCase, completion: str) -> str:
    """The program HumanEval-infilling executes: the filled-in function, its tests, the check."""
    return case.prefix + completion + case.suffix + "\n" + case.test + "\n" + f"check({case.entry_point})"


def score_humaneval(case: FimCase, completion: str, timeout_s: float = HUMANEVAL_TIMEOUT_S) -> ExecResult:
    if case.test is None or case.entry_point is None:
        raise ValueError(f"{case.id} has no tests to run")
    return run_program(humaneval_program(case, completion), timeout_s=timeout_s)


def score_humaneval_many(
    cases: Sequence[FimCase], completions: Sequence[str], workers: int | None = None
) -> list[ExecResult]:
    """Score completions[k] against cases[k] in parallel; results keep the input order.

    Threads suffice: each one only waits on its subprocess.
    """
    if len(cases) != len(completions):
        raise ValueError("one completion per case")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(score_humaneval, cases, completions))
