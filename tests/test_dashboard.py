"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by playwright)
against a real manager and real workers: sign-in, workers and jobs arriving live over
``/events``, the run form, job detail with workflow links, failures, cancel, pause/resume;
filters, paging and a URL per job and view; charts, attempts, run again, schedules; a scoped
credential; the layout at 420 px.

Every wait is playwright's auto-waiting ``expect`` or a bounded ``wait_until``, never a sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from easyjobs import EasyJobsWorker

from .conftest import RunningManager
from .mesh import registered
from .utils import SECRET, TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]

CHROMIUM = os.environ.get("EASYJOBS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (scripts/test installs it); never a browser playwright downloads."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/test, which installs Debian's "
                    "chromium package, or set EASYJOBS_CHROMIUM")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=FLAGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser, manager: RunningManager) -> AsyncIterator[Page]:
    """A fresh tab on the manager's /dashboard; a script error in the page fails the test."""
    expect.set_options(timeout=TIMEOUT * 1000)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(TIMEOUT * 1000)
    errors: list[Exception] = []
    tab.on("pageerror", lambda exc: errors.append(exc))
    await tab.goto(f"http://{manager.host}:{manager.port}/dashboard")
    yield tab
    await context.close()
    assert not errors, errors


async def sign_in(page: Page, token: str = SECRET) -> None:
    await page.fill("#token", token)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#live")).to_have_text("live")


async def view(page: Page, name: str) -> None:
    """Open a view from the header's navigation."""
    await page.click(f"nav a[data-view={name}]")
    await expect(page.locator("#main")).to_have_attribute("data-view", name)


async def http_submit(manager: RunningManager, queue: str, task: str,
                      body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=f"http://{manager.host}:{manager.port}",
                                 headers={"Authorization": f"Bearer {SECRET}"}) as http:
        response = await http.post(f"/{queue}/task/{task}", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def worker_row(page: Page, name: str) -> Any:
    return page.locator("#workers tr", has_text=name)


def job_row(page: Page, job_id: str) -> Any:
    return page.locator(f'#jobs tr[data-job-id="{job_id}"]')


async def test_wrong_token_shows_login_error(page: Page) -> None:
    """A refused token keeps the login form up with an error and stores nothing."""
    await page.fill("#token", "not-the-secret")
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_contain_text("Wrong token")
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length + localStorage.length") == 0
    await sign_in(page)
    assert await page.evaluate("sessionStorage.getItem('easyjobs.token')") == SECRET
    assert await page.evaluate("localStorage.length") == 0
    await page.reload()  # same tab, same session: still signed in
    await expect(page.locator("#live")).to_have_text("live")
    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_worker_appears_live_and_pause_resume(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """A worker that connects after the page opened shows up; pausing it is the manager's state."""
    await sign_in(page)
    await page.evaluate("window.notReloaded = true")
    worker = worker_factory(name="etl-live", max_tasks=3)

    @worker.task()
    async def noop() -> None:
        return None

    await worker.start()
    row = worker_row(page, "etl-live")
    await expect(row).to_contain_text("0 / 3")
    await expect(page.locator("#run-task option", has_text="ETL / noop")).to_have_count(1)
    dispatcher = manager.manager.core.dispatcher
    (worker_id,) = [w.id for w in dispatcher.workers.values() if w.name == "etl-live"]

    await row.get_by_role("button", name="Pause").click()
    await expect(row).to_have_attribute("data-paused", "true")
    await wait_until(lambda: dispatcher.workers[worker_id].paused, what="the worker paused")
    await row.get_by_role("button", name="Resume").click()
    await expect(row).to_have_attribute("data-paused", "false")
    assert not dispatcher.workers[worker_id].paused

    await page.click("#pause-all")
    await expect(row).to_have_attribute("data-paused", "true")
    assert dispatcher.paused
    await page.click("#resume-all")
    await expect(row).to_have_attribute("data-paused", "false")
    assert not dispatcher.paused

    await worker.stop(grace=0)
    await expect(row).to_have_count(0)
    assert await page.evaluate("window.notReloaded") is True


async def test_run_task_from_form_and_watch_it_complete(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """The form's generated fields run a task; the job turns succeeded in place; detail shows it."""
    worker = worker_factory()
    release = asyncio.Event()

    @worker.task()
    async def greet(name: str, times: int = 1) -> str:
        await release.wait()
        return f"hello {name}" * times

    await worker.start()
    await registered(manager, "ETL", "greet")
    await sign_in(page)
    await page.evaluate("window.notReloaded = true")
    await page.select_option("#run-task", label="ETL / greet")
    await page.fill("#arg-name", "ada")
    await page.fill("#arg-times", "2")
    await page.click("#run-submit")
    link = page.locator("#run-created [data-job-link]")
    job_id = await link.get_attribute("data-job-link")
    assert job_id
    row = job_row(page, job_id)
    await expect(page.locator("#main")).to_have_attribute("data-view", "jobs")  # its page
    assert page.url.endswith(f"/dashboard#/jobs/{job_id}")
    await expect(row).to_have_attribute("data-status", "running")
    await expect(worker_row(page, "ETL")).to_contain_text("1 / 10")  # load follows the job
    release.set()
    await expect(row).to_have_attribute("data-status", "succeeded")
    await expect(row).to_contain_text("ETL / greet")
    await expect(worker_row(page, "ETL")).to_contain_text("0 / 10")

    await page.click("#detail-close")
    await expect(page.locator("#detail")).to_be_hidden()
    await row.click()
    await expect(page.locator("#detail-id")).to_have_text(job_id)
    await expect(page.locator("#detail-args")).to_contain_text('"name": "ada"')
    await expect(page.locator("#detail-args")).to_contain_text('"times": 2')
    await expect(page.locator("#detail-result")).to_have_text('"hello adahello ada"')
    await expect(page.locator("#detail-cancel")).to_be_hidden()

    await view(page, "overview")
    await page.check("#run-raw")  # the raw body takes {"args": [...], "kwargs": {...}} too
    await page.fill("#run-json", '{"args": ["bo"], "kwargs": {"times": 3}}')
    await page.click("#run-submit")
    await expect(page.locator("#detail-result")).to_have_text('"hello bohello bohello bo"')
    await expect(page.locator("#jobs tr[data-status=succeeded]")).to_have_count(2)
    assert await page.evaluate("window.notReloaded") is True


async def test_failure_is_highlighted_with_traceback_and_workflow_links(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """A failed job is marked; its detail shows the traceback and links to its on_failure job."""
    worker = worker_factory()

    @worker.task()
    async def cleanup(job_failed: dict[str, Any]) -> str:
        return f"cleaned {job_failed['task']}"

    @worker.task(retry_policy=None, on_failure="cleanup")
    async def explode(message: str) -> None:
        raise ValueError(message)

    await worker.start()
    await registered(manager, "ETL", "cleanup", "explode")
    await sign_in(page)
    await view(page, "jobs")
    hostile = "<img src=x onerror=window.pwned=1>"
    job_id = await http_submit(manager, "ETL", "explode", {"message": hostile})
    row = job_row(page, job_id)
    await expect(row).to_have_attribute("data-status", "failed")
    await expect(row).to_have_class(re.compile(r"\bfailed\b"))
    await expect(row).to_contain_text("ValueError")

    await row.click()
    await expect(page.locator("#detail-error")).to_have_text(f"ValueError: {hostile}")
    traceback = page.locator("#detail-traceback")
    await expect(traceback).to_contain_text("Traceback (most recent call last)")
    await expect(traceback).to_contain_text("in explode")
    await expect(page.locator("#detail-result-box")).to_be_hidden()
    assert await page.locator("#app img").count() == 0  # API text is never parsed as HTML
    assert await page.evaluate("window.pwned") is None

    await page.locator("#detail-fields [data-job-link]").click()  # on_failure job
    await expect(page.locator("#detail-fields")).to_contain_text("ETL / cleanup")
    await expect(page.locator("#detail-result")).to_have_text('"cleaned explode"')
    await page.locator("#detail-fields [data-job-link]").first.click()  # back to the failure
    await expect(page.locator("#detail-id")).to_have_text(job_id)


async def test_cancel_unfinished_job(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """The cancel button stops a running job and the list shows it cancelled."""
    worker = worker_factory()
    started = asyncio.Event()

    @worker.task()
    async def hold() -> None:
        started.set()
        await asyncio.Event().wait()

    await worker.start()
    await registered(manager, "ETL", "hold")
    await sign_in(page)
    await page.select_option("#run-task", label="ETL / hold")
    await page.click("#run-submit")
    job_id = await page.locator("#run-created [data-job-link]").get_attribute("data-job-link")
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await expect(page.locator("#detail")).to_have_attribute("data-status", "running")
    await page.click("#detail-cancel")
    await expect(job_row(page, str(job_id))).to_have_attribute("data-status", "cancelled")
    await expect(page.locator("#detail-cancel")).to_be_hidden()


async def test_reconnects_when_the_stream_ends(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """When /events ends the page reloads a snapshot and follows the stream again."""
    worker = worker_factory()

    @worker.task()
    async def noop() -> None:
        return None

    await worker.start()
    await registered(manager, "ETL", "noop")
    await sign_in(page)
    hub = manager.manager.http.events  # type: ignore[union-attr]
    await wait_until(lambda: hub.subscribers == 1, what="the page to follow /events")
    hub.close()  # what happens to a subscriber that falls too far behind
    first = await http_submit(manager, "ETL", "noop", {})
    await expect(job_row(page, first)).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("#live")).to_have_text("live")
    await wait_until(lambda: hub.subscribers == 1, what="the page to follow /events again")
    second = await http_submit(manager, "ETL", "noop", {})
    await expect(job_row(page, second)).to_have_attribute("data-status", "succeeded")
