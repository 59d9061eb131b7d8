"""easyjobs' pytest plugin, used as a program's tests use it: pytester runs the example tests
(examples/testing/) in a fresh pytest session with the plugin, against a real in-process
manager and the example's own worker object."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "testing"

pytest_plugins = ["pytester"]


def user_project(pytester: pytest.Pytester, mode: str) -> None:
    """A project holding the example's code and tests, set up as a strict user would."""
    pytester.makeini(textwrap.dedent(f"""\
        [pytest]
        addopts = --strict-markers
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
    """))
    for name in ("shop.py", "test_shop.py"):
        (pytester.path / name).write_text((EXAMPLE / name).read_text())
    pytester.syspathinsert()


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_example_tests_pass_with_the_plugin(pytester: pytest.Pytester, mode: str) -> None:
    """Every example test passes, in either pytest-asyncio mode; two of them run the module's
    one worker object on a fresh manager each, so it is retargeted and restarted in between."""
    user_project(pytester, mode)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_a_wrong_expectation_fails_through_the_cluster(pytester: pytest.Pytester) -> None:
    """The fixture really runs the task: a wrong expectation fails, the right one passes."""
    user_project(pytester, "auto")
    pytester.makepyfile(test_wrong=textwrap.dedent("""\
        import pytest
        from shop import price, worker

        @pytest.fixture
        def easyjobs_workers():
            return [worker]

        async def test_wrong(easyjobs_cluster):
            assert await price("tea", 2) == 0

        async def test_right(easyjobs_cluster):
            assert await price("tea", 2) == 9.0
    """))
    result = pytester.runpytest("-p", "no:cacheprovider", "test_wrong.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*assert 9.0 == 0*"])


def test_more_workers_and_manager_options(pytester: pytest.Pytester) -> None:
    """``easyjobs_manager_options`` reach the manager (fast retries); ``start`` adds a worker
    built in the test, which shares the manager with the fixture's."""
    user_project(pytester, "auto")
    pytester.makepyfile(test_more=textwrap.dedent("""\
        import pytest
        from easyjobs import EasyJobsWorker
        from shop import price, worker

        @pytest.fixture
        def easyjobs_workers():
            return [worker]

        @pytest.fixture
        def easyjobs_manager_options():
            return {"retry_base": 0.01}

        async def test_retry_and_a_second_worker(easyjobs_cluster):
            other = EasyJobsWorker(manager_secret="unused", jobs_queue="flaky")
            tries = []

            @other.task(retry_policy="retry_once")
            async def flaky() -> int:
                tries.append(1)
                if len(tries) == 1:
                    raise RuntimeError("first try fails")
                return await price("cup")

            await easyjobs_cluster.start(other)
            assert await flaky() == 4.5
            assert len(tries) == 2
    """))
    result = pytester.runpytest("-p", "no:cacheprovider", "test_more.py")
    result.assert_outcomes(passed=1)


def test_the_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    """The installed distribution names the plugin in ``pytest11``: pytest loads it by itself
    in any project that installs easyjobs (the runs above pass no ``-p``)."""
    found = [e.value for e in importlib.metadata.entry_points(group="pytest11")
             if e.name == "easyjobs"]
    assert found == ["easyjobs.testing.plugin"]


def test_importing_the_plugin_loads_no_manager() -> None:
    """pytest imports the plugin in every project that installs easyjobs: it stays cheap."""
    code = ("import sys, easyjobs.testing.plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('uvicorn', 'starlette', 'websockets') or m.startswith('easyjobs.') "
            "and m not in ('easyjobs.testing', 'easyjobs.testing.plugin')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={"PYTHONPATH": str(REPO)}).stdout.strip()
    assert loaded == "[]"
