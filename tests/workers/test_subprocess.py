"""Subprocess tasks against a real manager: the script in the task directory runs in a child
process per job, its result reaches the caller, its failures arrive with their details, and the
child's whole process group goes when the job is timed out, cancelled or its worker stops.

The task scripts are written into ``tmp_path`` by each test. A child that must be inspected while
it runs publishes its pids to a file and waits for a file the test creates: nothing here waits a
fixed time to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from easyjobs import ConfigurationError, EasyJobsClient, EasyJobsWorker, TaskFailed
from easyjobs.errors import JobCancelled
from easyjobs.protocol.session import MISSED_HEARTBEATS
from easyjobs.workers.child import STDERR_TAIL, run_child

from ..conftest import RunningManager
from ..utils import SECRET, TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]

REPO = Path(__file__).resolve().parents[2]

SEED_TEMPLATE = '''\
# /home/codemation/blocking_funcs/basic_blocking.py
import time
from easyjobs.workers.task import subprocess

@subprocess
def work(a, b, c):
    """
    insert blocking / non-blocking work here
    """
    time.sleep(0.05) # Blocking
    return {'result': 'I slept for 5 seconds - blocking with {a} {b} {c}'}

if __name__ == '__main__':
    work()
'''
"""The seed's "Subprocess Template" as users wrote it (its 5 s sleep shortened)."""

PUBLISH = '''\
import os, pathlib, time

def publish(folder, name, text):
    """Write ``folder/name`` whole (the test must never read half a file)."""
    tmp = pathlib.Path(folder) / (name + ".tmp")
    tmp.write_text(text)
    tmp.rename(pathlib.Path(folder) / name)

def wait_for(folder, name):
    while not (pathlib.Path(folder) / name).exists():
        time.sleep(0.005)
'''
"""Helpers the blocking scripts start with: publish a file, wait for the test's file."""

BLOCKING = PUBLISH + '''
from easyjobs.workers.task import subprocess

@subprocess
def work(folder, label):
    publish(folder, label + ".pid", str(os.getpid()))
    wait_for(folder, label + ".go")
    return label

if __name__ == "__main__":
    work()
'''
"""Publishes its pid as ``<label>.pid``, then returns ``label`` once ``<label>.go`` exists."""

WITH_GRANDCHILD = PUBLISH + '''
import subprocess as sp, sys
from easyjobs.workers.task import subprocess

@subprocess
def work(folder):
    grandchild = sp.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    publish(folder, "ids", f"{os.getpid()} {grandchild.pid}")
    wait_for(folder, "never")

if __name__ == "__main__":
    work()
'''
"""Starts a grandchild in its own process group, publishes both pids, then blocks for good."""


def write_script(folder: Path, name: str, *parts: str) -> Path:
    """Write ``folder/name.py`` from ``parts``, each dedented on its own."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"{name}.py"
    script.write_text("".join(textwrap.dedent(part) for part in parts))
    return script


@pytest.fixture
def task_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A task directory, also set as ``WORKER_TASK_DIR`` (restored after the test)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    monkeypatch.setenv("WORKER_TASK_DIR", str(folder))
    return folder


@pytest.fixture
def signals(tmp_path: Path) -> Path:
    """The folder where blocking children publish their pids and wait for the test's files."""
    folder = tmp_path / "signals"
    folder.mkdir()
    return folder


def unstarted_worker() -> EasyJobsWorker:
    """A worker that is never started: enough to test what decorating checks."""
    return EasyJobsWorker(None, None, "127.0.0.1", 1, SECRET, "ETL")


async def published(folder: Path, name: str) -> str:
    await wait_until(lambda: (folder / name).exists(), what=f"a child to publish {name}")
    return (folder / name).read_text()


def living(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that have not exited.

    A zombie has exited: it only waits to be reaped by its new parent (here pid 1, which may
    reap late), and ``killpg(pgid, 0)`` still finds it, so it does not count.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


async def group_gone(pgid: int) -> None:
    await wait_until(lambda: not living(pgid), what=f"process group {pgid} to be gone")


def proc_entries(pid: int, name: str) -> list[bytes]:
    """``/proc/<pid>/<name>`` (cmdline, environ) split at its NUL bytes."""
    return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0")[:-1]


async def run(*argv: str) -> tuple[int, str, str]:
    """Run ``argv`` (the repository on PYTHONPATH) without blocking the loop; code, out, err."""
    env = {**os.environ}
    env.pop("EASYJOBS_RESULT_FD", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------------------ decoration


def test_missing_task_dir_names_the_variable_and_shows_the_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without WORKER_TASK_DIR or task_dir=, decorating fails naming both and the template."""
    monkeypatch.delenv("WORKER_TASK_DIR", raising=False)
    worker = unstarted_worker()
    with pytest.raises(ConfigurationError) as caught:
        @worker.task(subprocess=True)
        async def compute(data: dict[str, Any]) -> None:
            pass
    message = str(caught.value)
    assert "WORKER_TASK_DIR" in message and "compute.py" in message
    assert "from easyjobs.workers.task import subprocess" in message
    assert "@subprocess" in message and "if __name__ == '__main__':" in message


def test_missing_script_names_its_path(task_dir: Path) -> None:
    """A task directory without <task>.py fails at decoration, naming the missing path."""
    worker = unstarted_worker()
    with pytest.raises(ConfigurationError) as caught:
        @worker.task(subprocess=True)
        async def compute(data: dict[str, Any]) -> None:
            pass
    assert str(task_dir.resolve() / "compute.py") in str(caught.value)
    assert "@subprocess" in str(caught.value)


@pytest.mark.parametrize("name", ["my-task", "pkg.compute", "../compute", "/tmp/compute"])
def test_task_name_must_be_an_identifier(task_dir: Path, name: str) -> None:
    """A subprocess task whose name is not a plain identifier is refused (no path can escape)."""
    (task_dir / "pkg").mkdir()
    write_script(task_dir / "pkg", "compute", SEED_TEMPLATE)
    write_script(task_dir.parent, "compute", SEED_TEMPLATE)

    async def compute() -> None:
        pass

    compute.__name__ = name
    with pytest.raises(ConfigurationError) as caught:
        unstarted_worker().task(subprocess=True)(compute)
    assert repr(name) in str(caught.value)


async def test_task_dir_option_overrides_the_variable(
    task_dir: Path, tmp_path: Path, worker_factory: WorkerFactory
) -> None:
    """task_dir= wins over WORKER_TASK_DIR: its script is the one that runs."""
    script = 'from easyjobs.workers.task import subprocess\n\n@subprocess\ndef work():\n' \
             '    return {!r}\n\nif __name__ == "__main__":\n    work()\n'
    write_script(task_dir, "which", script.format("from WORKER_TASK_DIR"))
    write_script(tmp_path / "option", "which", script.format("from task_dir="))
    write_script(tmp_path / "option", "only_there", script.format("only in task_dir="))
    worker = worker_factory()

    @worker.task(subprocess=True, task_dir=str(tmp_path / "option"))
    async def which() -> None:
        pass

    @worker.task(subprocess=True, task_dir=str(tmp_path / "option"))
    async def only_there() -> None:
        pass

    await worker.start()
    assert await asyncio.wait_for(which(), TIMEOUT) == "from task_dir="
    assert await asyncio.wait_for(only_there(), TIMEOUT) == "only in task_dir="


# ------------------------------------------------------------------ results


async def test_seed_template_result_reaches_its_callers(
    task_dir: Path, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """The seed's sync template runs: its result reaches `await task(...)` and client.call."""
    write_script(task_dir, "basic_blocking", SEED_TEMPLATE)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def basic_blocking(a: Any, b: Any, c: Any) -> None:
        pass

    await worker.start()
    expected = {"result": "I slept for 5 seconds - blocking with {a} {b} {c}"}
    assert await asyncio.wait_for(basic_blocking(1, 2, c=3), TIMEOUT) == expected
    assert await client.call("ETL", "basic_blocking", "x", b=[1], c={"k": None}) == expected


async def test_async_work_function(
    task_dir: Path, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """An async `work` runs to completion in the child; arguments and result keep their types."""
    write_script(task_dir, "add", """\
        import asyncio
        from easyjobs.workers.task import subprocess

        @subprocess
        async def work(a, b, *, scale=1, blob=b""):
            await asyncio.sleep(0)
            return {"sum": (a + b) * scale, "pid": __import__("os").getpid(), "blob": blob,
                    "nested": [a, {"b": b}]}

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def add(a: float, b: float, *, scale: int = 1, blob: bytes = b"") -> None:
        pass

    await worker.start()
    first = await asyncio.wait_for(add(2, 3, scale=10, blob=b"\x00\xff"), TIMEOUT)
    assert first["sum"] == 50 and first["blob"] == b"\x00\xff"
    assert first["nested"] == [2, {"b": 3}]
    assert first["pid"] != os.getpid()
    second = await client.call("ETL", "add", 1.5, 2.5)
    assert second["sum"] == 4.0 and second["pid"] != first["pid"]  # a new child per job


async def test_large_arguments_and_result_pass_through_the_pipes(
    task_dir: Path, worker_factory: WorkerFactory
) -> None:
    """Arguments and a result far larger than a pipe's buffer arrive whole."""
    write_script(task_dir, "echo", """\
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(text):
            return text[::-1] * 2

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def echo(text: str) -> None:
        pass

    await worker.start()
    text = "".join(chr(ord("a") + i % 26) for i in range(300_000))
    assert await asyncio.wait_for(echo(text), TIMEOUT) == text[::-1] * 2


async def test_seed_pipeline_awaits_a_subprocess_task_with_one_slot(
    task_dir: Path, worker_factory: WorkerFactory
) -> None:
    """The seed's pipeline awaits compute(data=...) (a subprocess task) with max_tasks=1."""
    write_script(task_dir, "compute", """\
        import time
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(data: dict):
            time.sleep(0.05) # Blocking
            return {'result': f'I slept - blocking with {data}'}

        if __name__ == '__main__':
            work()
        """)
    worker = worker_factory(max_tasks=1)

    @worker.task(subprocess=True)
    async def compute(data: dict[str, Any]) -> None:
        pass

    @worker.task()
    async def pipeline() -> Any:
        result = await compute(data={"test": "data"})
        return result

    await worker.start()
    assert await asyncio.wait_for(pipeline(), TIMEOUT) == {
        "result": "I slept - blocking with {'test': 'data'}"
    }


async def test_manager_task_can_be_a_subprocess_task(
    manager: RunningManager, task_dir: Path, client: EasyJobsClient
) -> None:
    """@manager.task(subprocess=True) runs its script in a child of the manager process."""
    write_script(task_dir, "local_compute", SEED_TEMPLATE)

    @manager.manager.task(namespace="LOCAL", subprocess=True)
    async def local_compute(a: Any, b: Any, c: Any) -> None:
        pass

    assert await client.call("LOCAL", "local_compute", 1, 2, 3) == {
        "result": "I slept for 5 seconds - blocking with {a} {b} {c}"
    }


# ------------------------------------------------------------------ concurrency


async def test_two_children_overlap(task_dir: Path, worker_factory: WorkerFactory) -> None:
    """Two subprocess jobs run at once: each child waits until the other has started."""
    write_script(task_dir, "meet", PUBLISH, """
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(folder, me, other):
            start = time.time()
            publish(folder, me, "")
            wait_for(folder, other)
            return {"start": start, "end": time.time()}

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory(max_tasks=2)

    @worker.task(subprocess=True)
    async def meet(folder: str, me: str, other: str) -> None:
        pass

    await worker.start()
    folder = str(task_dir)
    a, b = await asyncio.wait_for(
        asyncio.gather(meet(folder, "a", "b"), meet(folder, "b", "a")), TIMEOUT)
    assert a["start"] < b["end"] and b["start"] < a["end"]


async def test_worker_keeps_serving_while_children_block(
    manager_factory: Callable[..., Any], task_dir: Path, signals: Path, tmp_path: Path,
    worker_factory: WorkerFactory, client_factory: Callable[..., Any],
) -> None:
    """While children block, plain tasks run and heartbeats (0.2 s) keep the worker connected."""
    heartbeat = 0.2
    fast = await manager_factory(db=tmp_path / "fast.db", heartbeat=heartbeat)
    write_script(task_dir, "blocking", BLOCKING)
    worker = worker_factory(port=fast.port, max_tasks=3)
    client: EasyJobsClient = await client_factory(port=fast.port)

    @worker.task(subprocess=True)
    async def blocking(folder: str, label: str) -> None:
        pass

    @worker.task()
    async def ping() -> str:
        return "pong"

    await worker.start()
    jobs = [await blocking.submit(str(signals), label) for label in ("one", "two")]
    for label in ("one", "two"):
        await published(signals, f"{label}.pid")
    sessions = set(fast.manager.core.peers.by_id)
    assert await asyncio.wait_for(client.call("ETL", "ping"), TIMEOUT) == "pong"
    await asyncio.sleep(2 * MISSED_HEARTBEATS * heartbeat)  # time passing is what is tested
    assert await asyncio.wait_for(client.call("ETL", "ping"), TIMEOUT) == "pong"
    assert set(fast.manager.core.peers.by_id) == sessions  # nobody was dropped and reconnected
    for label in ("one", "two"):
        (signals / f"{label}.go").touch()
    assert [await job.result(timeout=TIMEOUT) for job in jobs] == ["one", "two"]


# ------------------------------------------------------------------ failures

FAILING_CASES = {
    "raises": ("""\
        import sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            print("about to fail", file=sys.stderr)
            raise ValueError(f"bad input {n}")

        if __name__ == "__main__":
            work()
        """, "ValueError", "bad input 42",
        ['raise ValueError(f"bad input {n}")', "failing.py", "ValueError: bad input 42"]),
    "sys_exit": ("""\
        import sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            for i in range(50):
                print(f"stderr line {i}", file=sys.stderr)
            sys.exit(3)

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "exited with code 3", ["stderr line 49\n"]),
    "os_exit": ("""\
        import os, sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            print("last words", file=sys.stderr, flush=True)
            os._exit(3)

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "exited with code 3", ["last words\n"]),
    "sigkill": ("""\
        import os, signal, sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            print("killing myself", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "killed by SIGKILL", ["killing myself\n"]),
    "garbage": ("""\
        import os
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            os.write(int(os.environ["EASYJOBS_RESULT_FD"]), b"\\xc1 this is not msgpack")
            return n

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "failing.py wrote an unreadable result", []),
    "wrong_shape": ("""\
        import os, msgpack
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            os.write(int(os.environ["EASYJOBS_RESULT_FD"]), msgpack.packb([1, 2, 3]))
            os._exit(0)

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "failing.py wrote an unreadable result", []),
    "bad_error_map": ("""\
        import os, msgpack
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            error = {"type": 1, "message": None, "traceback": [b"x"]}
            os.write(int(os.environ["EASYJOBS_RESULT_FD"]),
                     msgpack.packb({"ok": False, "error": error}))
            os._exit(0)

        if __name__ == "__main__":
            work()
        """, "ChildProcessError", "failing.py wrote an unreadable result", []),
    "never_calls_work": ("""\
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            return n
        """, "ChildProcessError", "exited with code 0 without a result", []),
}


@pytest.mark.parametrize("case", list(FAILING_CASES))
async def test_failed_child_fails_its_job_and_the_worker_goes_on(
    case: str, task_dir: Path, worker_factory: WorkerFactory
) -> None:
    """A child that raises/exits/is killed/writes garbage fails its job; the worker goes on."""
    text, error_type, message, in_traceback = FAILING_CASES[case]
    write_script(task_dir, "failing", text)
    write_script(task_dir, "fine", SEED_TEMPLATE)
    worker = worker_factory(max_tasks=1)

    @worker.task(subprocess=True, retry_policy="never")
    async def failing(n: int) -> None:
        pass

    @worker.task(subprocess=True)
    async def fine(a: Any, b: Any, c: Any) -> None:
        pass

    @worker.task()
    async def ping() -> str:
        return "pong"

    await worker.start()
    with pytest.raises(TaskFailed) as caught:
        await asyncio.wait_for(failing(42), TIMEOUT)
    failed = caught.value
    assert failed.type == error_type
    assert message in failed.message
    for text in in_traceback:
        assert text in failed.traceback
    assert all(isinstance(v, str) for v in (failed.type, failed.message, failed.traceback))
    assert await asyncio.wait_for(ping(), TIMEOUT) == "pong"
    assert (await asyncio.wait_for(fine(1, 2, 3), TIMEOUT))["result"].startswith("I slept")


async def test_exit_reports_only_the_last_stderr_lines(
    task_dir: Path, worker_factory: WorkerFactory
) -> None:
    """A child that exits non-zero fails with the last STDERR_TAIL lines of its stderr."""
    write_script(task_dir, "failing", FAILING_CASES["sys_exit"][0])
    worker = worker_factory()

    @worker.task(subprocess=True, retry_policy="never")
    async def failing(n: int) -> None:
        pass

    await worker.start()
    with pytest.raises(TaskFailed) as caught:
        await asyncio.wait_for(failing(1), TIMEOUT)
    lines = caught.value.traceback.splitlines()
    assert lines == [f"stderr line {i}" for i in range(50 - STDERR_TAIL, 50)]


async def test_output_reaches_the_worker_and_cannot_corrupt_the_result(
    task_dir: Path, worker_factory: WorkerFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    """What the script prints (lots, long lines, fake results) shows but leaves the result be."""
    fake = msgpack.packb({"ok": True, "value": "forged"}, use_bin_type=True)
    write_script(task_dir, "noisy", f"""\
        import sys
        from easyjobs.workers.task import subprocess

        FAKE = {fake!r}

        @subprocess
        def work(n):
            for i in range(2000):
                print(f"stdout line {{i}}", "x" * 100)
                print(f"stderr line {{i}}", "y" * 100, file=sys.stderr)
            sys.stdout.flush()
            sys.stdout.buffer.write(FAKE * 100)
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(FAKE * 100 + b"\\n")
            sys.stderr.write("z" * 200_000 + "\\n")
            sys.stderr.write("no newline at the end " * 10_000)
            print("stdout marker END")
            return {{"n": n}}

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def noisy(n: int) -> None:
        pass

    await worker.start()
    assert await asyncio.wait_for(noisy(7), TIMEOUT) == {"n": 7}
    out, err = capfd.readouterr()
    assert "stdout line 1999" in out and "stdout marker END" in out
    assert "stderr line 1999" in err and "z" * 200_000 in err
    assert err.rstrip().endswith("no newline at the end")


async def test_child_stderr_nobody_reads_does_not_stop_the_event_loop(
    task_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the worker's stderr a full pipe, the job still finishes; the output follows later."""
    size = 300_000  # several times what a pipe holds
    script = write_script(task_dir, "loud", """\
        import sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(n):
            sys.stderr.write("e" * n)
            return n

        if __name__ == "__main__":
            work()
        """)
    read_fd, write_fd = os.pipe()
    stuck = os.fdopen(write_fd, "w")
    finished = threading.Event()
    loop_was_stuck = threading.Event()
    received = bytearray()

    def reader() -> None:
        """Read nothing until the job finished; if it cannot, the loop was stuck: unstick it."""
        if not finished.wait(TIMEOUT):
            loop_was_stuck.set()
        while len(received) < size and (chunk := os.read(read_fd, 65536)):
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    monkeypatch.setattr(sys, "stderr", stuck)
    try:
        assert await asyncio.wait_for(run_child(script, [size], {}), TIMEOUT) == size
        finished.set()
        await asyncio.to_thread(thread.join, TIMEOUT)
    finally:
        finished.set()
        monkeypatch.undo()
        thread.join(TIMEOUT)
        stuck.close()
        os.close(read_fd)
    assert not loop_was_stuck.is_set()
    assert bytes(received) == b"e" * size


# ------------------------------------------------------------------ killing the process group


async def test_timed_out_child_leaves_no_process_behind(
    task_dir: Path, signals: Path, worker_factory: WorkerFactory
) -> None:
    """A child over its timeout fails with TaskTimeout and its group, grandchild too, is gone."""
    write_script(task_dir, "stuck", WITH_GRANDCHILD)
    write_script(task_dir, "fine", SEED_TEMPLATE)
    worker = worker_factory(max_tasks=1)

    @worker.task(subprocess=True, timeout=0.5, retry_policy="never")
    async def stuck(folder: str) -> None:
        pass

    @worker.task(subprocess=True)
    async def fine(a: Any, b: Any, c: Any) -> None:
        pass

    await worker.start()
    job = await stuck.submit(str(signals))
    child, grandchild = map(int, (await published(signals, "ids")).split())
    assert os.getpgid(grandchild) == child  # the child leads its own group
    with pytest.raises(TaskFailed) as caught:
        await job.result(timeout=TIMEOUT)
    assert caught.value.type == "TaskTimeout"
    await group_gone(child)
    assert await asyncio.wait_for(fine(1, 2, 3), TIMEOUT)


async def test_cancelled_job_leaves_no_process_behind(
    task_dir: Path, signals: Path, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """job.cancel() on a running subprocess job kills the child's whole group."""
    write_script(task_dir, "stuck", WITH_GRANDCHILD)
    write_script(task_dir, "fine", SEED_TEMPLATE)
    worker = worker_factory(max_tasks=1)

    @worker.task(subprocess=True)
    async def stuck(folder: str) -> None:
        pass

    @worker.task(subprocess=True)
    async def fine(a: Any, b: Any, c: Any) -> None:
        pass

    await worker.start()
    job = await stuck.submit(str(signals))
    child, _ = map(int, (await published(signals, "ids")).split())
    assert (await job.cancel())["status"] == "cancelled"
    with pytest.raises(JobCancelled):
        await job.result(timeout=TIMEOUT)
    await group_gone(child)
    assert await asyncio.wait_for(fine(1, 2, 3), TIMEOUT)


async def test_worker_stop_leaves_no_process_behind(
    task_dir: Path, signals: Path, worker_factory: WorkerFactory
) -> None:
    """worker.stop(grace=0) kills the group of every running child."""
    write_script(task_dir, "stuck", WITH_GRANDCHILD)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def stuck(folder: str) -> None:
        pass

    await worker.start()
    await stuck.submit(str(signals))
    child, grandchild = map(int, (await published(signals, "ids")).split())
    assert set(living(child)) >= {child, grandchild}
    await asyncio.wait_for(worker.stop(grace=0), TIMEOUT)
    await group_gone(child)


async def test_finished_child_leaves_no_grandchild_behind(
    task_dir: Path, signals: Path, worker_factory: WorkerFactory
) -> None:
    """A script that returns while a grandchild it started still runs: the grandchild goes too."""
    write_script(task_dir, "leaky", PUBLISH, """
        import subprocess as sp, sys
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(folder):
            grandchild = sp.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            return [os.getpid(), grandchild.pid]

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def leaky(folder: str) -> None:
        pass

    await worker.start()
    child, _grandchild = await asyncio.wait_for(leaky(str(signals)), TIMEOUT)
    await group_gone(child)


# ------------------------------------------------------------------ what the child can see


async def test_child_shows_no_secret_or_job_data(
    task_dir: Path, signals: Path, worker_factory: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's argv (ps, /proc) and environment hold no secret and no job data."""
    monkeypatch.setenv("EASYJOBS_SECRET", SECRET)
    monkeypatch.setenv("EASYJOBS_SECRET_FILE", "/run/secrets/easyjobs")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/app")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    script = write_script(task_dir, "blocking", BLOCKING).resolve()
    worker = worker_factory()

    @worker.task(subprocess=True)
    async def blocking(folder: str, label: str) -> None:
        pass

    await worker.start()
    label = "jobdata5c1e"
    job = await blocking.submit(str(signals), label)
    pid = int(await published(signals, f"{label}.pid"))

    argv = proc_entries(pid, "cmdline")
    assert argv == [sys.executable.encode(), str(script).encode()]
    code, ps_line, _ = await run("ps", "-ww", "-o", "args=", "-p", str(pid))
    assert code == 0 and ps_line.strip() == f"{sys.executable} {script}"
    for shown in (ps_line.encode(), *argv):
        assert SECRET.encode() not in shown and label.encode() not in shown
        assert str(signals).encode() not in shown

    environ = proc_entries(pid, "environ")
    names = {entry.split(b"=", 1)[0] for entry in environ}
    assert not any(SECRET.encode() in entry for entry in environ)
    assert b"EASYJOBS_SECRET" not in names and b"EASYJOBS_SECRET_FILE" not in names
    assert b"DATABASE_URL" not in names
    assert b"UNRELATED_SETTING=kept" in environ and b"EASYJOBS_RESULT_FD" in names

    (signals / f"{label}.go").touch()
    assert await job.result(timeout=TIMEOUT) == label


# ------------------------------------------------------------------ outside a worker


async def test_template_runs_by_hand_and_prints_its_result() -> None:
    """`python compute.py --kwargs '{...}'` runs the example's template and prints JSON."""
    script = str(REPO / "examples" / "tasks" / "compute.py")
    code, out, err = await run(sys.executable, script, "--kwargs", '{"data": {"x": 1}}')
    assert code == 0, err
    assert json.loads(out) == {"result": "I slept for 1 second - blocking with {'x': 1}"}


async def test_script_runs_by_hand_with_positional_arguments(task_dir: Path) -> None:
    """--args and --kwargs given as JSON reach the function; an async one too."""
    script = write_script(task_dir, "add", """\
        import asyncio
        from easyjobs.workers.task import subprocess

        @subprocess
        async def work(a, b, c=0):
            await asyncio.sleep(0)
            return {"sum": a + b + c}

        if __name__ == "__main__":
            work()
        """)
    code, out, err = await run(sys.executable, str(script), "--args", "[1, 2]",
                               "--kwargs", '{"c": 3}')
    assert code == 0, err
    assert json.loads(out) == {"sum": 6}


async def test_importing_the_child_module_stays_light() -> None:
    """Importing easyjobs.workers.task loads no Starlette, uvicorn, websockets or FastAPI."""
    code, out, err = await run(sys.executable, "-c", (
        "import json, sys; import easyjobs.workers.task; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'starlette', 'uvicorn', 'websockets', 'fastapi', 'sqlite3'})))"
    ))
    assert code == 0, err
    assert json.loads(out) == []


# ------------------------------------------------------------------ workflow options


async def test_retry_and_on_failure_apply_to_subprocess_tasks(
    manager_factory: Callable[..., Any], task_dir: Path, signals: Path, tmp_path: Path,
    worker_factory: WorkerFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing child with retry_once runs twice, then its on_failure task gets the failure."""
    monkeypatch.setenv("EASYJOBS_RETRY_BASE", "0.01")
    quick = await manager_factory(db=tmp_path / "retries.db")
    write_script(task_dir, "flaky", """\
        import os, pathlib
        from easyjobs.workers.task import subprocess

        @subprocess
        def work(folder):
            with open(pathlib.Path(folder) / "attempts", "a") as log:
                log.write(f"{os.getpid()}\\n")
            raise RuntimeError("the child failed")

        if __name__ == "__main__":
            work()
        """)
    worker = worker_factory(port=quick.port)
    handled: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @worker.task(subprocess=True, retry_policy="retry_once", on_failure="notify")
    async def flaky(folder: str) -> None:
        pass

    @worker.task()
    async def notify(job_failed: dict[str, Any]) -> str:
        handled.set_result(job_failed)
        return "notified"

    await worker.start()
    job = await flaky.submit(str(signals))
    with pytest.raises(TaskFailed) as caught:
        await job.result(timeout=TIMEOUT)
    assert (caught.value.type, caught.value.message) == ("RuntimeError", "the child failed")
    job_failed = await asyncio.wait_for(handled, TIMEOUT)
    assert job_failed["job_id"] == job.id and job_failed["attempts"] == 2
    assert job_failed["error_type"] == "RuntimeError"
    assert job_failed["message"] == "the child failed"
    assert 'raise RuntimeError("the child failed")' in job_failed["traceback"]
    pids = (signals / "attempts").read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]
