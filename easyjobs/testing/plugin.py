"""easyjobs' pytest plugin: a real manager and the program's workers, in the test process.

    from myapp.jobs import add, worker      # an EasyJobsWorker built at import, as in production

    @pytest.fixture
    def easyjobs_workers():
        return [worker]

    async def test_add(easyjobs_cluster):
        assert await add(1, 2) == 3

Fixtures, each per test:

- ``easyjobs_workers``: the workers to start; override it (in a test module or a conftest.py)
  to return the program's own. None by default.
- ``easyjobs_manager_options``: keyword arguments for the ``EasyJobsManager``; override it for,
  say, fast retries (``{"retry_base": 0.01}``). None by default.
- ``easyjobs_cluster``: a running ``easyjobs.testing.cluster.Cluster``: a manager on an SQLite
  file in ``tmp_path`` and a free 127.0.0.1 port, those workers retargeted at it and started
  (their tasks registered), and ``.client``, a connected ``EasyJobsClient``.
  ``await easyjobs_cluster.start(other_worker)`` adds workers. Everything stops afterwards.

The fixtures are async: they need pytest-asyncio (``asyncio_mode = auto``, or tests marked
``@pytest.mark.asyncio``), on the default function-scoped loop. Under another runner, use
``easyjobs.testing.cluster.cluster`` directly. This module imports pytest and pytest-asyncio
only, since pytest loads it in every project that installs easyjobs; the manager is imported
when a test first asks for the cluster.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..workers.worker import EasyJobsWorker
    from .cluster import Cluster


@pytest.fixture
def easyjobs_workers() -> list[EasyJobsWorker]:
    """The workers ``easyjobs_cluster`` starts: override this to return the program's own."""
    return []


@pytest.fixture
def easyjobs_manager_options() -> dict[str, Any]:
    """Keyword arguments for the in-process ``EasyJobsManager``: override this to change them."""
    return {}


async def _cluster(tmp_path: Path, easyjobs_workers: list[EasyJobsWorker],
                   easyjobs_manager_options: dict[str, Any]) -> AsyncIterator[Cluster]:
    """A manager in this process with ``easyjobs_workers`` started on it, and a client."""
    from .cluster import cluster

    async with cluster(*easyjobs_workers, directory=tmp_path,
                       **easyjobs_manager_options) as running:
        yield running


def _needs_pytest_asyncio() -> None:
    pytest.fail("the easyjobs_cluster fixture needs pytest-asyncio (pip install pytest-asyncio); "
                "under another runner use easyjobs.testing.cluster.cluster", pytrace=False)


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    easyjobs_cluster = pytest_asyncio.fixture(name="easyjobs_cluster")(_cluster)
else:  # the fixture says what is missing when a test asks for it
    easyjobs_cluster = pytest.fixture(name="easyjobs_cluster")(_needs_pytest_asyncio)
