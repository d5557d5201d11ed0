"""Runs inside the sandbox child (passed as `python -I -B -c <this file>`), never imported.

A file descriptor (the last argument) carries one line with a per-run nonce, then the
untrusted program; it is read and closed before the program runs, so stdin stays free for
the program's own input (SAFIM feeds each unit test there). This guard caps resources,
installs an audit hook (PEP 578) that refuses network, process creation and
writes outside the working directory, runs the program, and prints the nonce only when the
program ran to the end. The parent trusts "passed" only with the nonce, so a program that
exits early with status 0 (sys.exit(0), os._exit(0)) cannot fake a pass.

The audit hook is defence in depth, not a security boundary (ctypes-free Python code cannot
remove it, but native code could); the rlimits, the throwaway cwd, a clean environment and
the parent's process-group kill are the other layers.

argv: memory_bytes cpu_seconds file_size_bytes payload_fd
Exit codes: 0 finished, 1 exception, 2 does not compile, 3 exited early via SystemExit.
"""

import os
import resource
import sys
import traceback

# Events refused outright: networking, new processes, native code and raising the limits
# (the child may run as root, which could otherwise raise its hard limits again).
DENIED_EVENTS = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "os.fork", "os.forkpty", "os.kill", "os.killpg", "pty.spawn",
    "ctypes.dlopen", "resource.setrlimit", "resource.prlimit",
    "os.chmod", "os.chown", "os.link", "os.symlink", "webbrowser.open",
}
# Events that touch paths: (path position, dir_fd position or None) pairs in the event
# arguments. Every such path must resolve inside the working directory.
PATH_EVENTS = {
    "os.remove": [(0, 1)], "os.rmdir": [(0, 1)], "os.mkdir": [(0, 2)],
    "os.rename": [(0, 2), (1, 3)], "os.truncate": [(0, None)], "os.utime": [(0, 3)],
    "shutil.rmtree": [(0, 1)],
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
ALLOWED_OUTSIDE = {os.devnull}


def set_limits(memory_bytes, cpu_seconds, file_size_bytes):
    # Soft CPU limit sends SIGXCPU (reported as a timeout); the hard one a second later kills.
    limits = {
        resource.RLIMIT_AS: (memory_bytes, memory_bytes),
        resource.RLIMIT_CPU: (cpu_seconds, cpu_seconds + 1),
        resource.RLIMIT_FSIZE: (file_size_bytes, file_size_bytes),
        resource.RLIMIT_CORE: (0, 0),
        # No new processes or threads. The kernel ignores this for root, hence the audit hook.
        resource.RLIMIT_NPROC: (0, 0),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)


def resolve(path, dir_fd=None):
    """Absolute real path of `path`, or None for an already-open descriptor."""
    if isinstance(path, int):
        return None
    path = os.fsdecode(path)
    if dir_fd not in (None, -1) and not os.path.isabs(path):
        # A dir_fd-relative path: find the directory through /proc.
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.realpath(path)


def is_writing(mode, flags):
    return (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)


def refuse(what, detail=""):
    raise PermissionError(f"sandbox: {what} {detail}".rstrip())


def make_guards(root):
    """The audit hook and an os.open wrapper, both confining writes to `root`."""

    def inside(path, dir_fd=None):
        # Descriptors (None here) were vetted when they were opened.
        real = resolve(path, dir_fd)
        return real is None or real == root or real.startswith(root + os.sep) or real in ALLOWED_OUTSIDE

    def hook(event, args):
        if event in DENIED_EVENTS or event.startswith("socket."):
            refuse(event)
        if event == "open":
            path, mode, flags = args
            if is_writing(mode, flags) and not inside(path):
                refuse("write to", repr(path))
        for path_at, dir_fd_at in PATH_EVENTS.get(event, ()):
            dir_fd = None if dir_fd_at is None else args[dir_fd_at]
            if not inside(args[path_at], dir_fd):
                refuse(event, repr(args[path_at]))

    real_os_open = os.open

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        # The "open" audit event does not carry dir_fd, so check that case here.
        if dir_fd is not None and is_writing(None, flags) and not inside(path, dir_fd):
            refuse("write to", repr(path))
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    return hook, guarded_os_open


def refuse_special_files(*args, **kwargs):
    raise PermissionError("sandbox: creating special files is not allowed")


def main():
    memory_bytes, cpu_seconds, file_size_bytes, payload_fd = (int(a) for a in sys.argv[1:5])
    with os.fdopen(payload_fd, "rb") as payload:
        nonce, _, source = payload.read().decode("utf-8", errors="replace").partition("\n")
    set_limits(memory_bytes, cpu_seconds, file_size_bytes)
    hook, os.open = make_guards(os.path.realpath(os.getcwd()))
    sys.addaudithook(hook)
    # mkfifo and mknod raise no audit event at all.
    os.mkfifo = os.mknod = refuse_special_files
    sys.dont_write_bytecode = True

    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError):
        traceback.print_exc(limit=0)
        sys.exit(2)
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        print(f"program exited early (SystemExit {e.code!r})", file=sys.stderr)
        sys.exit(3)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    sys.stdout.write("\n" + nonce.strip() + "\n")
    sys.stdout.flush()


main()
