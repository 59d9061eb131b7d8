"""Calls a type checker must accept, and calls it must refuse: ``tests/test_typing.py`` runs
mypy over this file and expects an error on exactly the lines marked ``# E: <error code>``.

Never run: the tasks are registered on a worker that never starts.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from easyjobs import EasyJobsClient, EasyJobsManager, EasyJobsWorker, Job

worker = EasyJobsWorker(manager_secret="secret")
manager = EasyJobsManager(server_secret="secret")
client = EasyJobsClient(secret="secret")


@worker.task()
async def add(a: int, b: int, *, scale: float = 1.0) -> float:
    return (a + b) * scale


@worker.task(namespace="ETL", retry_policy="never", timeout=5)
def blocking(path: str) -> list[str]:
    return [path]


@manager.task(schedule="* * * * *")
async def tick() -> None:
    return None


@worker.task()
async def untyped(data, count=1):  # type: ignore[no-untyped-def]
    return data


async def good() -> None:
    assert_type(await add(1, 2), float)
    assert_type(await add(1, b=2, scale=0.5), float)
    assert_type(await blocking("/tmp/x"), list[str])
    assert_type(await tick(), None)
    job = await add.submit(1, 2)
    assert_type(job, Job[float])
    assert_type(await job.result(), float)
    assert_type(await job.result(timeout=3), float)
    assert_type(await (await blocking.submit(path="p")).result(), list[str])
    assert_type(await untyped({"k": 1}), Any)
    assert_type(await untyped(data=[1], count=2), Any)
    remote = worker.remote("ETL", "extract")
    assert_type(await remote("anything", at=1), Any)
    assert_type(await client.call("ETL", "add", 1, 2), Any)
    assert_type(await client.task("ETL", "add")(1, 2), Any)
    assert_type(await (await client.submit("ETL", "add", 1, 2)).result(), Any)


async def bad() -> None:
    await add("x", b=None, scale=3)  # E: arg-type
    await add(1)  # E: call-arg
    await add(1, 2, 3)  # E: call-arg
    await add(1, 2, scal=1.0)  # E: call-arg
    await add.submit("1", 2)  # E: arg-type
    await blocking(path=1)  # E: arg-type
    await tick(1)  # E: call-arg
    worker.task(retry_policy=1)  # E: arg-type


async def not_a_str() -> str:
    return await add(1, 2)  # E: return-value


async def not_a_list() -> list[str]:
    return await (await add.submit(1, 2)).result()  # E: return-value
