"""The README's FastAPI examples, run as written under uvicorn: a manager and a worker inside
apps that use ``lifespan``, taking their secret and address from the environment."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from easyjobs import EasyJobsClient, UnknownTask

from .conftest import Process
from .processes import wait_listening
from .utils import SECRET, free_port, wait_until

README = Path(__file__).resolve().parent.parent / "README.md"


def fastapi_examples() -> dict[str, str]:
    """The README's Python blocks that build ``FastAPI(lifespan=lifespan)``, by what they embed."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = {("manager" if "EasyJobsManager" in block else "worker"): block
             for block in blocks if "FastAPI(lifespan=lifespan)" in block}
    assert set(found) == {"manager", "worker"}, "the README lost a lifespan example"
    return found


def test_the_readme_shows_on_event_only_as_the_compatibility_path() -> None:
    """No README code block uses on_event; the prose names it as the compatibility path."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert not any("on_event" in block for block in blocks)
    assert "(the compatibility path)" in text and "is the compatibility path" in text


async def test_the_readme_lifespan_manager_and_worker_serve_calls_under_uvicorn(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """Both examples, copied into modules and served by uvicorn: the manager's own task and
    the worker's both answer, and each side logs its "connected" line."""
    for kind, block in fastapi_examples().items():
        (tmp_path / f"readme_{kind}.py").write_text(block)
    port = free_port()
    env = {"PYTHONPATH": str(tmp_path), "EASYJOBS_PORT": str(port)}
    manager = process_factory("-m", "uvicorn", "readme_manager:app", "--port", str(port),
                              env=env)
    await wait_listening(manager, port)
    worker = process_factory("-m", "uvicorn", "readme_worker:app", "--port", "0", env=env)
    await wait_until(lambda: "connected to manager at" in worker.output(),
                     what="the worker's connected line")
    await wait_until(lambda: re.search(r"INFO easyjobs.manager: worker '\S+' connected",
                                       manager.output()) is not None,
                     what="the manager's connected line")
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        assert await client.call("general", "general_work", {"x": 1}) == {"done": {"x": 1}}

        async def added() -> bool:  # the register may trail the connected line a little
            try:
                return bool(await client.call("ETL", "add", 2, 3) == 5)
            except UnknownTask:
                return False

        await wait_until(added, what="the worker's add")
    assert (tmp_path / "jobs.db").exists()  # the manager's db_path, in its working directory
    assert "on_event is deprecated" not in worker.output() + manager.output()


ON_EVENT_MANAGER = '''\
import os

from fastapi import FastAPI

from easyjobs.manager import EasyJobsManager

app = FastAPI()

@app.on_event("startup")
async def start():
    manager = await EasyJobsManager.create(app, server_secret=os.environ["EASYJOBS_SECRET"],
                                           db_path="jobs.db")

    @manager.task(namespace="general")
    async def general_work(general_data: dict):
        return {"done": general_data}
'''


async def test_the_on_event_manager_of_the_original_docs_still_serves(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """The compatibility path the README names: EasyJobsManager.create in on_event('startup')."""
    (tmp_path / "old_manager.py").write_text(ON_EVENT_MANAGER)
    port = free_port()
    manager = process_factory("-m", "uvicorn", "old_manager:app", "--port", str(port),
                              env={"PYTHONPATH": str(tmp_path)})
    await wait_listening(manager, port)
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        assert await client.call("general", "general_work", {"x": 1}) == {"done": {"x": 1}}
