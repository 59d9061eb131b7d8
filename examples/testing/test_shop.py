"""Tests of shop.py with easyjobs' pytest plugin: a real manager and this worker, in-process."""

import pytest
from shop import checkout, invoice, price, worker

from easyjobs import ConfigurationError, InvalidArguments, JobStatus

pytestmark = pytest.mark.asyncio  # not needed with asyncio_mode = "auto"


@pytest.fixture
def easyjobs_workers():
    """The workers easyjobs_cluster starts (a conftest.py can hold this for every module)."""
    return [worker]


async def test_checkout_runs_through_a_real_manager(easyjobs_cluster):
    assert await checkout([{"sku": "tea", "qty": 2}, {"sku": "cup"}]) == "2 lines, 13.50 EUR"


async def test_a_client_submits_and_follows_a_job(easyjobs_cluster):
    job = await easyjobs_cluster.client.submit("shop", "price", "tea", qty=3)
    assert await job.result() == 13.5
    assert await job.status() is JobStatus.SUCCEEDED


async def test_price_runs_locally_without_a_manager():
    assert await price.run_local("tea", qty=3) == 13.5


async def test_a_bad_call_fails_as_it_would_remotely():
    with pytest.raises(InvalidArguments, match="unexpected keyword argument 'quantity'"):
        await price.run_local("tea", quantity=3)


async def test_a_task_that_calls_tasks_needs_the_cluster():
    with pytest.raises(ConfigurationError, match="invoice runs locally"):
        await invoice.run_local([{"sku": "tea"}])
