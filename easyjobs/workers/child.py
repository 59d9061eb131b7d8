"""The worker's side of a subprocess task: run ``<task_dir>/<task>.py`` in a child process.

The child is started without a shell, in its own process group, with the job's arguments on
its stdin (never on argv) and a private pipe for the outcome (``easyjobs.workers.task``). Its
stdout is the worker's; its stderr is forwarded to the worker's stderr (by a thread: a stderr
that blocks must not stop the event loop) and the last lines are kept for the error report. It
never sees the manager's secret: variables holding it are removed from its environment.
Cancellation (timeout, job cancelled, worker shutdown) kills the whole process group, so nothing
is left behind.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import queue
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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
STDERR_LINE = 2000
STDERR_BACKLOG = 1 << 20
"""Characters of children's stderr waiting for the worker's stderr before more is dropped."""
STDERR_FLUSH_WAIT = 1.0
"""Seconds a finished job waits for its child's stderr to be written before it reports."""
ERROR_KEYS = ("type", "message", "traceback")
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
    """The worker's environment less anything holding the secret.

    A variable goes when it is named like ours, equals the secret, or contains it (only for
    secrets of 8 characters or more, so that a short one cannot take ``PATH`` with it).
    """
    text = secret.decode(errors="replace") if secret else ""

    def holds_secret(value: str) -> bool:
        return bool(text) and (value == text or (len(text) >= 8 and text in value))

    env = {
        key: value for key, value in os.environ.items()
        if key not in SECRET_VARIABLES and not holds_secret(value)
    }
    env[RESULT_FD] = str(fd)
    return env


async def run_child(script: Path, args: list[Any], kwargs: dict[str, Any],
                    secret: bytes | None = None) -> Any:
    """Run the script once with these arguments and return its result (or raise)."""
    read_fd, write_fd = os.pipe()
    # stderr gets a pipe of our own, not asyncio's PIPE: asyncio's ``wait()`` also waits for
    # its pipes to close, and a grandchild holding stderr would keep it waiting for ever.
    err_read, err_write = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdin=asyncio.subprocess.PIPE,
            stderr=err_write, pass_fds=(write_fd,), start_new_session=True,
            env=_environment(secret, write_fd), cwd=str(script.parent),
        )
    except BaseException:
        os.close(read_fd)
        os.close(err_read)
        raise
    finally:
        os.close(write_fd)
        os.close(err_write)
    stderr = _Stderr()
    outcome: list[bytes] = []
    result_pipe = os.fdopen(read_fd, "rb", buffering=0)
    err_pipe = os.fdopen(err_read, "rb", buffering=0)
    try:
        _, _, code = await asyncio.gather(
            _read_pipe(result_pipe, outcome.append),
            _read_pipe(err_pipe, stderr.feed),
            _feed_and_wait(proc, msgpack.packb([args, kwargs], use_bin_type=True)),
        )
    except BaseException:
        _kill_group(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        raise
    finally:
        result_pipe.close()
        err_pipe.close()
    stderr.feed(b"")
    with contextlib.suppress(asyncio.TimeoutError):  # the output first, unless stderr is stuck
        await asyncio.wait_for(_forwarder.written(), STDERR_FLUSH_WAIT)
    return _result(b"".join(outcome), code, stderr.tail(), script.stem)


async def _feed_and_wait(proc: asyncio.subprocess.Process, data: bytes) -> int:
    assert proc.stdin is not None
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
    finally:
        proc.stdin.close()
    code = await proc.wait()
    _kill_group(proc.pid)  # grandchildren the script left behind go with it
    return code


class _Stderr:
    """The child's stderr: forwarded to ours as it comes, its last lines kept for the report.

    Lines may be of any length (a kept line is cut to its last ``STDERR_LINE`` characters).
    """

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=STDERR_TAIL)
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk, final=not chunk)
        if text and sys.stderr is not None:
            _forwarder.write(sys.stderr, text)
        *lines, partial = (self._partial + text).split("\n")
        self._lines.extend(line[-STDERR_LINE:] + "\n" for line in lines)
        self._partial = partial[-STDERR_LINE:]

    def tail(self) -> str:
        lines = [*self._lines, self._partial] if self._partial else list(self._lines)
        return "".join(lines[-STDERR_TAIL:])


class _Forwarder:
    """Writes children's stderr to the worker's in a thread of its own, in order.

    Writing on the event loop would stop it (heartbeats, every job) whenever the worker's stderr
    blocks, say a pipe nobody reads. At most ``STDERR_BACKLOG`` characters wait; what comes
    beyond is dropped, and a line says how much once output fits again.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[TextIO, str] | asyncio.Future[None]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._dropped = 0
        self._thread: threading.Thread | None = None

    def write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            if self._waiting + len(text) > STDERR_BACKLOG:
                self._dropped += len(text)
                return
            dropped, self._dropped = self._dropped, 0
            if dropped:
                text = (f"[easyjobs: {dropped} characters of subprocess stderr dropped: "
                        "this process's stderr was not being read]\n" + text)
            self._waiting += len(text)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="easyjobs stderr",
                                                daemon=True)
                self._thread.start()
            self._queue.put((stream, text))

    def written(self) -> asyncio.Future[None]:
        """A future resolved once everything written so far has been handed to its stream."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._thread is None:
                future.set_result(None)
            else:
                self._queue.put(future)
        return future

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, asyncio.Future):
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    item.get_loop().call_soon_threadsafe(_resolve, item)
                continue
            stream, text = item
            with contextlib.suppress(OSError, ValueError):  # closed or broken: output is lost
                stream.write(text)
                stream.flush()
            with self._lock:
                self._waiting -= len(text)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_forwarder = _Forwarder()


async def _read_pipe(pipe: BinaryIO, on_chunk: Callable[[bytes], None]) -> None:
    """Hand each chunk read from ``pipe`` to ``on_chunk`` until EOF (the writers all closed)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while chunk := await reader.read(65536):
            on_chunk(chunk)
    finally:
        transport.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _result(outcome: bytes, code: int, stderr: str, name: str) -> Any:
    if outcome:
        try:
            decoded = msgpack.unpackb(outcome, raw=False, strict_map_key=False)
            if decoded.get("ok"):
                return decoded.get("value")
            error = decoded["error"]
            # what goes into the done frame must be {type, message, traceback} strings
            if not all(isinstance(error.get(key), str) for key in ERROR_KEYS):
                raise TypeError("malformed error")
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
            raise ChildFailed({"type": "ChildProcessError", "traceback": stderr,
                               "message": f"{name}.py wrote an unreadable result"}) from None
        raise ChildFailed({key: error[key] for key in ERROR_KEYS})
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    elif code == 0:  # ran to its end and never handed a result over
        how = ("exited with code 0 without a result: it must call a function decorated "
               "with @subprocess (from easyjobs.workers.task), under "
               "if __name__ == '__main__': — written like this:\n"
               + TEMPLATE.format(path=f"{name}.py"))
    else:
        how = f"exited with code {code} without a result"
    raise ChildFailed({"type": "ChildProcessError", "message": f"{name}.py {how}",
                       "traceback": stderr})
