"""The child's side of a subprocess task: ``from easyjobs.workers.task import subprocess``.

A subprocess task's work lives in ``$WORKER_TASK_DIR/<task>.py``::

    from easyjobs.workers.task import subprocess

    @subprocess
    def work(a, b, c):            # sync or async
        return {'result': a + b + c}

    if __name__ == '__main__':
        work()

Started by a worker, ``work()`` reads its arguments from stdin (msgpack ``[args, kwargs]``),
runs, and writes the outcome to the pipe named by ``EASYJOBS_RESULT_FD`` (msgpack
``{"ok": true, "value": ...}`` or ``{"ok": false, "error": {type, message, traceback}}``), so
whatever the function prints cannot corrupt it. Run by hand, it takes JSON arguments from the
command line and prints the result as JSON:

    python work.py --args '[1, 2, 3]' --kwargs '{"c": 3}'

This module must stay cheap to import: no Starlette, uvicorn or websockets.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

RESULT_FD = "EASYJOBS_RESULT_FD"


def subprocess(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` the entry point of a subprocess task script (see the module docstring).

    Called with arguments, the function simply runs; called with none, it takes them from the
    worker (or from ``--args``/``--kwargs`` when run by hand).
    """

    @functools.wraps(fn)
    def entry(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return _call(fn, list(args), kwargs)
        fd = os.environ.get(RESULT_FD)
        if fd is None:
            return _run_by_hand(fn)
        return _run_for_worker(fn, int(fd))

    return entry


def _call(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        import asyncio

        async def wait() -> Any:
            return await result

        return asyncio.run(wait())
    return result


def _run_for_worker(fn: Callable[..., Any], fd: int) -> Any:
    data = sys.stdin.buffer.read()
    args, kwargs = msgpack.unpackb(data, raw=False, strict_map_key=False)
    try:
        value = _call(fn, args, kwargs)
        payload = msgpack.packb({"ok": True, "value": value}, use_bin_type=True)
    except Exception as exc:
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
        payload = msgpack.packb({"ok": False, "error": error}, use_bin_type=True)
        value = None
    with os.fdopen(fd, "wb") as out:
        out.write(payload)
    return value


def _run_by_hand(fn: Callable[..., Any]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(description=f"run {fn.__name__} once, outside a worker")
    parser.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    parser.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    options = parser.parse_args()
    value = _call(fn, json.loads(options.args), json.loads(options.kwargs))
    print(json.dumps(value, default=repr))  # noqa: T201  (the point of running it by hand)
    return value
