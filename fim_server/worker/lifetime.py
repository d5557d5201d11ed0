"""When a worker leaves on its own: its spawner is gone, it has been idle too long, or its engine is dead.

A worker started by hand runs until it is stopped. One that a program spawned (fim-lsp) must not
outlive it: an editor crash SIGKILLs fim-lsp, and its worker would keep the model's memory and the
address forever. A worker whose device is lost would answer every request with an error forever;
exiting lets a supervisor (or fim-lsp) start a fresh one. Every check here is a plain function of
what it is given, so the tests call them without waiting or a GPU.
"""

from __future__ import annotations

import os
from typing import Optional

# RuntimeError messages of a device that no longer works: every later call fails the same way.
DEVICE_LOST = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "CUDNN_STATUS", "NCCL", "HIP error")
OOMS_IN_A_ROW = 2              # one out-of-memory is a batch too big; two in a row is a full device


def idle_expired(now: float, last_active: float, busy: bool, idle_exit_s: float) -> bool:
    """Whether the worker should exit: nothing queued or running and no request or reply for
    idle_exit_s seconds (0: never)."""
    return idle_exit_s > 0 and not busy and now - last_active >= idle_exit_s


class Parent:
    """The process whose end ends the worker (`--parent-pid`)."""

    def __init__(self, pid: int):
        self.pid = pid
        # A child is reparented the moment its parent dies, even while the dead parent is a
        # zombie that kill(pid, 0) still finds; any other process is looked up by its pid.
        self.is_parent = os.getppid() == pid

    def gone(self) -> bool:
        if self.is_parent:
            return os.getppid() != self.pid
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:         # it exists, as another user
            pass
        return False


class EngineHealth:
    """Tells a failed batch (a bug, a bad input: `internal`, the worker goes on) from a dead
    engine (the device is lost: the worker must exit), as vLLM's EngineDeadError does."""

    def __init__(self) -> None:
        self.ooms = 0                   # out-of-memory failures in a row

    def ok(self) -> None:
        """A batch got through."""
        self.ooms = 0

    def dead(self, exc: BaseException) -> bool:
        """Whether the exception a batch raised means the engine is dead (counts it)."""
        chain = list(causes(exc))
        if any(is_out_of_memory(e) for e in chain):
            self.ooms += 1
            return self.ooms >= OOMS_IN_A_ROW
        self.ooms = 0
        return any(device_lost(e) for e in chain)


def causes(exc: BaseException):
    """exc and what it was raised from or during (an engine may wrap the device's error)."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def device_lost(exc: BaseException) -> bool:
    import torch

    accelerator_error = getattr(torch, "AcceleratorError", None)      # torch >= 2.8
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in DEVICE_LOST)
