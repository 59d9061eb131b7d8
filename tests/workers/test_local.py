"""``task.run_local``: the body runs in-process with no manager, its call bound and checked as a
remote call's is (the same errors, word for word, as a real manager gives)."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import (
    ConfigurationError,
    EasyJobsClient,
    EasyJobsWorker,
    InvalidArguments,
    SerializationError,
)
from easyjobs.remote import RemoteTask

from ..utils import SECRET, free_port

WorkerFactory = Callable[..., EasyJobsWorker]


def unstarted_worker() -> EasyJobsWorker:
    """A worker aimed at a port nobody listens on, never started: run_local needs no manager."""
    return EasyJobsWorker(manager_host="127.0.0.1", manager_port=free_port(),
                          manager_secret=SECRET, jobs_queue="ETL")


def declare(worker: EasyJobsWorker) -> dict[str, RemoteTask]:
    @worker.task()
    async def place(sku: str, qty: int = 1, /, *tags: str, rush: bool, **extra: Any) -> str:
        return f"{sku}x{qty} {tags} {rush} {extra}"

    @worker.task()
    async def ship(address: str, *, fast: bool = False) -> str:
        return address

    return {"place": place, "ship": ship}


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("place", (), {"rush": True}),                  # a required positional missing
    ("place", ("a",), {}),                          # a required keyword-only missing
    ("place", (), {"sku": "a", "rush": True}),      # a positional-only name is no keyword
    ("ship", ("a", True), {}),                      # too many positional arguments
    ("ship", ("a",), {"address": "b"}),             # one argument given twice
    ("ship", ("a",), {"slow": True}),               # an unexpected keyword
]


async def test_run_local_runs_the_body_with_the_values_a_worker_would_get() -> None:
    """A tuple argument arrives as a list and a tuple result comes back as one, as remotely."""
    worker = unstarted_worker()

    @worker.task()
    async def pair(items: Any, *, label: str = "x") -> Any:
        return (label, items, type(items).__name__)

    assert await pair.run_local((1, 2), label="y") == ["y", [1, 2], "list"]
    assert not worker.connected


async def test_run_local_runs_a_def_body_in_a_thread() -> None:
    """A ``def`` task runs in a thread of its own, as on a worker, not on the event loop."""
    worker = unstarted_worker()
    loop_thread = threading.current_thread()

    @worker.task()
    def where(n: int) -> list[Any]:
        return [n * 2, threading.current_thread() is loop_thread]

    assert await where.run_local(21) == [42, False]


@pytest.mark.parametrize(("task", "args", "kwargs"), BAD_CALLS)
async def test_run_local_refuses_what_the_manager_refuses_in_the_same_words(
    worker_factory: WorkerFactory, client: EasyJobsClient, task: str, args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Arguments that do not bind raise ``InvalidArguments`` with the remote call's message."""
    worker = worker_factory()
    tasks = declare(worker)
    await worker.start()
    with pytest.raises(InvalidArguments) as remote:
        await client.call("ETL", task, *args, **kwargs)
    with pytest.raises(InvalidArguments) as local:
        await tasks[task].run_local(*args, **kwargs)
    assert str(local.value) == str(remote.value)


async def test_run_local_binds_a_good_call_of_every_parameter_kind() -> None:
    """Positional-only, defaults, ``*args``, keyword-only and ``**kwargs`` bind as in Python."""
    place = declare(unstarted_worker())["place"]
    assert await place.run_local("a", 3, "t1", "t2", rush=False, gift=True) == \
        "ax3 ('t1', 't2') False {'gift': True}"
    assert await place.run_local("a", rush=True) == "ax1 () True {}"
    assert await place.run_local("a", 2, sku="b", rush=True) == "ax2 () True {'sku': 'b'}"


async def test_run_local_does_not_use_default_args() -> None:
    """``default_args`` feed schedule ticks and dependencies, not a direct call: as remotely."""
    worker = unstarted_worker()

    @worker.task(default_args={"kwargs": {"url": "http://stats"}})
    async def fetch(url: str) -> str:
        return url

    with pytest.raises(InvalidArguments, match=r"fetch\(\) missing 1 required argument: 'url'"):
        await fetch.run_local()
    assert await fetch.run_local("http://other") == "http://other"


async def test_run_local_refuses_values_msgpack_cannot_carry() -> None:
    """An argument or a result that could not cross the wire is a ``SerializationError``."""
    worker = unstarted_worker()

    @worker.task()
    async def echo(value: Any) -> Any:
        return value

    @worker.task()
    async def make_set() -> Any:
        return {1, 2}

    with pytest.raises(SerializationError, match="set is not msgpack-serializable"):
        await echo.run_local({1, 2})
    with pytest.raises(SerializationError, match=r"the result of make_set \(set\)"):
        await make_set.run_local()


async def test_run_local_lets_the_body_exception_through() -> None:
    """What the body raises reaches the test as it is, not wrapped in ``TaskFailed``."""
    worker = unstarted_worker()

    @worker.task()
    async def divide(a: int, b: int) -> float:
        return a / b

    with pytest.raises(ZeroDivisionError):
        await divide.run_local(1, 0)


@pytest.mark.parametrize("sync", [False, True], ids=["async def", "def"])
async def test_a_body_run_locally_cannot_call_another_task(sync: bool) -> None:
    """Calling a task from a body run by run_local raises ``ConfigurationError`` at the call,
    naming the task and the fixture to use instead; the callee does not run."""
    worker = unstarted_worker()
    ran: list[str] = []

    @worker.task()
    async def child() -> None:
        ran.append("child")

    if sync:
        @worker.task()
        def parent() -> None:
            child()
    else:
        @worker.task()
        async def parent() -> None:
            await child()

    with pytest.raises(ConfigurationError, match="parent runs locally .* easyjobs_cluster"):
        await parent.run_local()
    assert ran == []
    assert await child.run_local() is None  # run_local itself is not left refused
    assert ran == ["child"]


async def test_submitting_from_a_body_run_locally_is_refused() -> None:
    """``.submit`` and ``worker.remote(...)`` are calls too: refused the same way."""
    worker = unstarted_worker()
    other = worker.remote("ETL", "elsewhere")

    @worker.task()
    async def fan_out() -> None:
        await other.submit()

    with pytest.raises(ConfigurationError, match="fan_out runs locally"):
        await fan_out.run_local()


async def test_a_task_declared_elsewhere_has_no_body_to_run_locally() -> None:
    """A remote handle (``worker.remote``) has no body here: a clear error, not a hang."""
    with pytest.raises(ConfigurationError, match="no body in this process"):
        await unstarted_worker().remote("ETL", "elsewhere").run_local()


async def test_run_local_runs_a_subprocess_task_script(tmp_path: Path) -> None:
    """A subprocess task runs its script in a child process, as its worker would."""
    (tmp_path / "add.py").write_text(textwrap.dedent("""\
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(a, b):
            return {"sum": a + b}

        if __name__ == "__main__":
            work()
    """))
    worker = unstarted_worker()

    @worker.task(subprocess=True, task_dir=str(tmp_path))
    async def add(a: int, b: int) -> Any: ...

    assert await add.run_local(2, b=3) == {"sum": 5}
