"""The worker's side of a subprocess task: run ``<task_dir>/<task>.py`` in a child process.

The child is started without a shell, in its own process group, with the job's arguments on
its stdin (never on argv) and a private pipe for the outcome (``easyjobs.workers.task``). Its
stdout is the worker's; its stderr is forwarded to the worker's stderr and the last lines are
kept for the error report. It never sees the manager's secret: variables holding it are removed
from its environment. Cancellation (timeout, job cancelled, worker shutdown) kills the whole
process group, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgpack

from ..errors import ConfigurationError
from .task import RESULT_FD

TEMPLATE = '''# {path}
from easyjobs.workers.task import subprocess

@subprocess
def work(...):
    ...  # blocking or CPU-bound work here
    return result

if __name__ == '__main__':
    work()'''

STDERR_TAIL = 20
SECRET_VARIABLES = ("EASYJOBS_SECRET", "EASYJOBS_SECRET_FILE")


class ChildFailed(Exception):
    """The child failed; ``error`` is the ``{type, message, traceback}`` to report."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(error["message"])
        self.error = error


def script_for(name: str, task_dir: str | None) -> Path:
    """The script of subprocess task ``name``; ``ConfigurationError`` explains what is missing."""
    directory = task_dir or os.environ.get("WORKER_TASK_DIR")
    if not name.isidentifier():
        raise ConfigurationError(
            f"subprocess task name {name!r} must be a plain identifier (it names a file)")
    if not directory:
        raise ConfigurationError(
            f"subprocess task {name} needs WORKER_TASK_DIR (or task_dir=) set to the folder "
            f"holding {name}.py, written like this:\n" + TEMPLATE.format(path=f"{name}.py"))
    script = Path(directory).resolve() / f"{name}.py"
    if not script.is_file():
        raise ConfigurationError(
            f"subprocess task {name}: {script} does not exist; write it like this:\n"
            + TEMPLATE.format(path=script))
    return script


def child_runner(script: Path, secret: bytes | None) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The coroutine function a worker runs for a subprocess task."""

    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_child(script, list(args), kwargs, secret)

    return run


def _environment(secret: bytes | None, fd: int) -> dict[str, str]:
    text = secret.decode(errors="replace") if secret else None
    env = {
        key: value for key, value in os.environ.items()
        if key not in SECRET_VARIABLES and not (text and text in value)
    }
    env[RESULT_FD] = str(fd)
    return env


async def run_child(script: Path, args: list[Any], kwargs: dict[str, Any],
                    secret: bytes | None = None) -> Any:
    """Run the script once with these arguments and return its result (or raise)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
            env=_environment(secret, write_fd), cwd=str(script.parent),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    try:
        outcome, _, code = await asyncio.gather(
            asyncio.to_thread(_read_all, read_fd),
            _forward_stderr(proc, tail),
            _feed_and_wait(proc, msgpack.packb([args, kwargs], use_bin_type=True)),
        )
    except BaseException:
        _kill_group(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        raise
    return _result(outcome, code, tail, script.stem)


async def _feed_and_wait(proc: asyncio.subprocess.Process, data: bytes) -> int:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()
    code = await proc.wait()
    _kill_group(proc.pid)  # grandchildren the script left behind go with it
    return code


def _read_all(fd: int) -> bytes:
    """Read the outcome pipe to its end (in a thread: EOF comes when the child exits)."""
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


async def _forward_stderr(proc: asyncio.subprocess.Process, tail: deque[str]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        text = line.decode(errors="replace")
        tail.append(text)
        sys.stderr.write(text)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _result(outcome: bytes, code: int, tail: deque[str], name: str) -> Any:
    stderr = "".join(tail)
    if outcome:
        try:
            decoded = msgpack.unpackb(outcome, raw=False, strict_map_key=False)
            if decoded.get("ok"):
                return decoded.get("value")
            raise ChildFailed(decoded["error"])
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
            raise ChildFailed({"type": "ChildProcessError", "traceback": stderr,
                               "message": f"{name}.py wrote an unreadable result"}) from None
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code} without a result"
    raise ChildFailed({"type": "ChildProcessError", "message": f"{name}.py {how}",
                       "traceback": stderr})
