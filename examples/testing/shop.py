"""A program's jobs, as it ships them: the worker is built at import for the production manager.

Its tests (``test_shop.py``) never reach that manager: the ``easyjobs_cluster`` fixture points
this same worker at a manager of their own.
"""

import os

from easyjobs import EasyJobsWorker

worker = EasyJobsWorker(
    manager_host="jobs.internal",
    manager_port=8220,
    manager_secret=os.environ.get("EASYJOBS_SECRET", "dev-only-secret"),
    jobs_queue="shop",
)

PRICES = {"tea": 4.5, "cup": 4.5}


@worker.task()
async def price(sku: str, qty: int = 1) -> float:
    return PRICES[sku] * qty


@worker.task()
async def invoice(lines: list) -> dict:
    total = 0.0
    for line in lines:
        total += await price(line["sku"], line.get("qty", 1))  # a task that calls a task
    return {"lines": len(lines), "total": total}


@worker.task()
def receipt(bill: dict) -> str:  # a def task: it runs in a thread of its own
    return f"{bill['lines']} lines, {bill['total']:.2f} EUR"


async def checkout(lines: list) -> str:
    """The program's own code, which calls tasks: what its tests exercise."""
    return await receipt(await invoice(lines))
