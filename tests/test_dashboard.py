"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by playwright)
against a real manager and real workers: sign-in, workers and jobs arriving live over
``/events``, the run form, job detail with workflow links, failures, cancel, pause/resume;
filters, paging and a URL per job and view; charts, attempts, run again, schedules; a scoped
credential; the layout at 420 px.

Every wait is playwright's auto-waiting ``expect`` or a bounded ``wait_until``, never a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from easyjobs import EasyJobsClient, EasyJobsWorker, TaskFailed

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
    context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                        timezone_id="UTC")  # the dates tests compute
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


async def open_url(page: Page, manager: RunningManager, fragment: str) -> None:
    """Load ``/dashboard#fragment`` afresh (a bookmark or a shared link), still signed in."""
    await page.goto(f"http://{manager.host}:{manager.port}/dashboard{fragment}")
    await page.reload()
    await expect(page.locator("#live")).to_have_text("live")


async def test_filters_paging_id_search_and_urls(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory,
    client: EasyJobsClient,
) -> None:
    """Filters and the job open live in the URL; pages past the newest 200 load on demand."""
    worker = worker_factory()

    @worker.task()
    async def noop(n: int) -> int:
        return n

    @worker.task(retry_policy=None)
    async def explode() -> None:
        raise ValueError("boom")

    await worker.start()
    await registered(manager, "ETL", "noop", "explode")
    ids = [(await client.submit("ETL", "noop", n)).id for n in range(203)]
    failed = [(await client.submit("ETL", "explode")).id for _ in range(2)]
    await asyncio.gather(*(client.result(job_id, TIMEOUT) for job_id in ids))
    for job_id in failed:
        with pytest.raises(TaskFailed):
            await client.result(job_id, TIMEOUT)
    await sign_in(page)

    await open_url(page, manager, "#/jobs?queue=ETL&task=noop")
    await expect(page.locator("#filter-queue")).to_have_value("ETL")
    await expect(page.locator("#filter-task")).to_have_value("noop")
    rows = page.locator("#jobs tr:visible")
    await expect(rows).to_have_count(200)
    await expect(job_row(page, ids[-1])).to_be_visible()  # newest first
    await expect(job_row(page, ids[0])).to_have_count(0)
    await page.click("#jobs-older")
    await expect(rows).to_have_count(203)
    await expect(job_row(page, ids[0])).to_be_visible()
    await expect(page.locator("#jobs-older")).to_be_hidden()  # that was the last page

    await page.fill("#filter-task", "")
    await page.select_option("#filter-status", "failed")
    await wait_until(lambda: page.url.endswith("#/jobs?queue=ETL&status=failed"),
                     what="the filters in the URL")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#jobs tr[data-status=failed]")).to_have_count(2)

    # Dates carry the day; the time filter is to the minute: before the first job, nothing.
    record = await manager.manager.calls.lookup(ids[0])
    first = datetime.fromtimestamp(record["created_at"], timezone.utc) - timedelta(minutes=1)
    await page.fill("#filter-until", first.strftime("%Y-%m-%dT%H:%M"))
    await page.dispatch_event("#filter-until", "change")
    await expect(page.locator("#no-jobs")).to_be_visible()
    await expect(page.locator("#jobs-summary")).to_contain_text("0 jobs shown (of 2 read")
    await page.fill("#filter-until", "")
    await page.fill("#filter-since", first.strftime("%Y-%m-%dT%H:%M"))
    await page.dispatch_event("#filter-since", "change")
    await expect(rows).to_have_count(2)
    await expect(job_row(page, failed[0]).locator("td.when")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))

    await page.fill("#find-id", ids[7])  # search by id: the job's own page
    await page.click("#find button[type=submit]")
    await expect(page.locator("#detail-id")).to_have_text(ids[7])
    assert page.url.split("#", 1)[1].startswith(f"/jobs/{ids[7]}")
    await open_url(page, manager, f"#/jobs/{failed[1]}")  # a job's URL, opened afresh
    await expect(page.locator("#detail-id")).to_have_text(failed[1])
    await expect(page.locator("#detail-error")).to_have_text("ValueError: boom")
    await open_url(page, manager, "#/jobs/0123456789abcdef")
    await expect(page.locator("#detail-problem")).to_have_text("No job 0123456789abcdef.")
    await page.click("#filter-clear")
    await expect(rows).to_have_count(200)
    await expect(page.locator("#detail")).to_be_hidden()


async def test_charts_attempts_and_run_again(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """Finished jobs feed each queue's charts (live and after a reload); a retried job lists its
    attempts; "Run again" submits a new job of the same task with the same arguments."""
    worker = worker_factory(name="etl-1")
    tries: list[int] = []

    @worker.task()
    async def add(a: int, b: int = 1) -> int:
        return a + b

    @worker.task(retry_policy=None)
    async def explode() -> None:
        raise ValueError("boom")

    @worker.task(retry_policy="retry_once")
    async def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("first try")
        return "second try"

    await worker.start()
    await registered(manager, "ETL", "add", "explode", "flaky")
    await sign_in(page)
    chart = page.locator('#charts [data-queue="ETL"]')
    first = await http_submit(manager, "ETL", "add", {"args": [2], "kwargs": {"b": 5}})
    await http_submit(manager, "ETL", "add", {"a": 1})
    await http_submit(manager, "ETL", "explode", {})
    await expect(chart.locator("[data-metric=finished]")).to_have_text("3 finished")
    await expect(chart.locator("[data-metric=failure-rate]")).to_have_text("33% failed")
    await expect(chart.locator("[data-metric=latency]")).to_have_text(re.compile(r"^median \d"))
    await expect(chart.locator("svg.throughput rect")).to_have_count(15)  # one bar a minute
    await page.reload()  # what finished before the page opened is counted too
    await expect(chart.locator("[data-metric=finished]")).to_have_text("3 finished")

    flaky_id = await http_submit(manager, "ETL", "flaky", {})  # this page sees it live
    await page.evaluate(f"location.hash = '#/jobs/{flaky_id}'")
    await expect(page.locator("#detail")).to_have_attribute("data-status", "succeeded")
    attempts = page.locator("#detail-attempts tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("failed: ConnectionError")
    await expect(attempts.nth(1)).to_contain_text("succeeded")
    await expect(attempts.nth(1)).to_contain_text("etl-1")  # the worker's name
    await page.reload()  # the store keeps the latest attempt; the earlier one is only counted
    await expect(attempts).to_have_count(1)
    await expect(attempts.nth(0)).to_have_attribute("data-attempt", "2")
    await expect(page.locator("#detail-attempts-note")).to_contain_text("1 earlier attempt")

    await open_url(page, manager, f"#/jobs/{first}")
    await expect(page.locator("#detail-result")).to_have_text("7")
    await page.click("#detail-rerun")
    await expect(page.locator("#detail-id")).not_to_have_text(first)
    again = await page.locator("#detail-id").text_content()
    assert again and page.url.split("#", 1)[1].startswith(f"/jobs/{again}")
    await expect(page.locator("#detail-result")).to_have_text("7")
    await expect(page.locator("#detail-args")).to_contain_text('"b": 5')
    original = await manager.manager.calls.lookup(first)
    assert original["status"] == "succeeded" and original["attempts"] == 1  # left as it was


async def test_schedules_view(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """The schedules view lists each scheduled task with its next fire time (date and time)."""
    worker = worker_factory()

    @worker.task(schedule="0 9 1 1 *")
    async def new_year() -> None:
        return None

    @worker.task()
    async def unscheduled() -> None:
        return None

    await worker.start()
    await registered(manager, "ETL", "new_year", "unscheduled")
    await sign_in(page)
    await view(page, "schedules")
    assert page.url.endswith("#/schedules")
    row = page.locator('#schedules tr[data-schedule="ETL/new_year"]')
    await expect(row).to_contain_text("0 9 1 1 *")
    (fire,) = [s["next_fire"] for s in await manager.manager.calls.schedules()
               if s["task"] == "new_year"]
    await expect(row.locator(".next-fire")).to_contain_text(
        datetime.fromtimestamp(fire, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
    await expect(row.locator(".next-fire")).to_contain_text(" in ")
    await expect(page.locator("#schedules tr")).to_have_count(1)


async def test_scoped_credential_and_the_managers_own_worker(
    page: Page, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """The manager's own worker is listed only with tasks, labelled; a client credential sees
    its queue's jobs and the workers panel as not visible, without errors."""
    await sign_in(page)
    await expect(page.locator("#no-workers")).to_be_visible()  # the loopback is no worker
    worker = worker_factory()

    @worker.task()
    async def noop() -> None:
        return None

    await worker.start()
    await registered(manager, "ETL", "noop")
    await expect(page.locator("#workers tr")).to_have_count(1)

    @manager.manager.task(namespace="LOCAL")
    async def housekeeping() -> None:
        return None

    own = page.locator('#workers tr[data-worker-id="loopback"]')
    await expect(own).to_contain_text("manager's own tasks")
    await expect(own.get_by_role("button")).to_have_count(0)

    etl = await http_submit(manager, "ETL", "noop", {})
    async with httpx.AsyncClient(base_url=f"http://{manager.host}:{manager.port}",
                                 headers={"Authorization": f"Bearer {SECRET}"}) as http:
        made = await http.post("/credentials", json={"name": "etl-reader", "role": "client",
                                                     "queues": ["ETL"]})
    assert made.status_code == 201, made.text
    await page.click("#logout")
    await sign_in(page, made.json()["token"])
    await expect(page.locator("#workers-denied")).to_be_visible()
    await expect(page.locator("#workers-table")).to_be_hidden()
    await expect(page.locator("#pause-all")).to_be_hidden()
    await expect(page.locator('#queues tr[data-queue="ETL"]')).to_have_count(1)
    await expect(page.locator('#queues tr[data-queue="LOCAL"]')).to_have_count(0)
    await view(page, "jobs")
    await expect(job_row(page, etl)).to_have_attribute("data-status", "succeeded")


async def test_layout_at_420_px(
    browser: Browser, manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """At 420 px wide (and at 1280) no view scrolls sideways, neither the page nor a panel."""
    worker = worker_factory()

    @worker.task(schedule="0 9 1 1 *", retry_policy=None)
    async def explode(message: str = "a rather long message to wrap") -> None:
        raise ValueError(message)

    await worker.start()
    await registered(manager, "ETL", "explode")
    job_id = await http_submit(manager, "ETL", "explode", {})
    context = await browser.new_context(viewport={"width": 420, "height": 900})
    try:
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        errors: list[Exception] = []
        page.on("pageerror", lambda exc: errors.append(exc))
        await page.goto(f"http://{manager.host}:{manager.port}/dashboard")
        await sign_in(page)
        checks = [("#/", "#charts .chart-row"), ("#/jobs", f'#jobs tr[data-job-id="{job_id}"]'),
                  (f"#/jobs/{job_id}", "#detail-traceback"), ("#/schedules", "#schedules tr")]
        for (fragment, ready), width in itertools.product(checks, (420, 1280)):
            await page.set_viewport_size({"width": width, "height": 900})
            await page.evaluate(f"location.hash = {fragment!r}")
            await expect(page.locator(ready).first).to_be_visible()
            overflow = await page.evaluate("""() => [document.documentElement,
                ...document.querySelectorAll('.panel')].filter((e) => e.offsetParent !== null
                || e === document.documentElement).filter((e) => e.scrollWidth > e.clientWidth)
                .map((e) => `${e.id || e.tagName}: ${e.scrollWidth} > ${e.clientWidth}`)""")
            assert overflow == [], (width, fragment, overflow)
        assert not errors, errors
    finally:
        await context.close()
