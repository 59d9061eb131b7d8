"""Screenshot the dashboard with a few jobs in it, for the docs: docs/dashboard*.png.

    .venv/bin/python scripts/screenshot.py [OUT_FOLDER]

Runs a manager (uvicorn on a free loopback port, SQLite in a temporary folder) and two workers
in this process, runs some jobs (a few succeed, one fails, one keeps running), then signs in to
the dashboard in Debian's headless Chromium (``apt-get install chromium``) and saves the
overview (``dashboard.png``), the jobs view with the failed job open (``dashboard-jobs.png``)
and that view on a 420-px-wide phone (``dashboard-phone.png``).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from easyjobs import EasyJobsClient, EasyJobsWorker, TaskFailed  # noqa: E402
from easyjobs.manager.app import create_app  # noqa: E402

SECRET = "screenshot-secret"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def workers(port: int, hold: asyncio.Event) -> list[EasyJobsWorker]:
    etl = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, "ETL", 4, name="etl-1")
    reports = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, "REPORTS", 2,
                             name="reports-1")

    @etl.task()
    async def extract(source: str = "s3://sales/latest.csv", limit: int = 100) -> dict[str, Any]:
        return {"source": source, "rows": limit}

    @etl.task(run_before=["extract"])
    async def transform(source: str = "orders.csv", normalize: bool = True) -> int:
        return 42

    @etl.task(schedule="0 2 * * *")
    async def nightly() -> None:
        return None

    @etl.task()
    async def backfill(day: str) -> None:
        await hold.wait()

    @reports.task(retry_policy="retry_once")
    async def send_report(email: str) -> None:
        raise ConnectionError(f"SMTP server refused the connection for {email}")

    return [etl, reports]


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(SECRET, str(Path(tmp) / "jobs.db"), retry_base=0.05)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        serving = asyncio.create_task(server.serve(sockets=[sock]))  # workers wait for it
        hold = asyncio.Event()
        started = workers(port, hold)
        for worker in started:
            await worker.start()
        client = EasyJobsClient("127.0.0.1", port, SECRET)
        await client.connect()
        try:
            await client.call("ETL", "extract", "s3://sales/2026-11.csv", limit=500)
            await client.call("ETL", "transform", source="orders.csv")
            await client.submit("ETL", "backfill", "2026-11-27")
            try:
                await client.call("REPORTS", "send_report", "ops@example.com")
            except TaskFailed:
                pass
            for month in range(1, 10):
                await client.call("ETL", "extract", f"s3://sales/2026-0{month}.csv")
            await shoot(port, out)
        finally:
            hold.set()
            await client.close()
            for worker in started:
                await worker.stop(grace=0)
            server.should_exit = True
            await serving


async def shoot(port: int, out: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        await page.goto(f"http://127.0.0.1:{port}/dashboard")
        await page.fill("#token", SECRET)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#live")).to_have_text("live")
        await expect(page.locator('#charts [data-queue="ETL"]')).to_be_visible()
        await page.select_option("#run-task", label="ETL / extract")
        await page.fill("#arg-source", "s3://sales/2026-11.csv")
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        await page.click("nav a[data-view=jobs]")
        await page.locator("#jobs tr[data-status=failed]").click()
        await expect(page.locator("#detail-traceback")).to_contain_text("ConnectionError")
        await page.screenshot(path=str(out / "dashboard-jobs.png"), full_page=True)
        phone = await browser.new_page(viewport={"width": 420, "height": 860})
        await phone.goto(page.url)
        await phone.fill("#token", SECRET)
        await phone.click("#login-form button[type=submit]")
        await expect(phone.locator("#detail-traceback")).to_contain_text("ConnectionError")
        await phone.screenshot(path=str(out / "dashboard-phone.png"))
        await browser.close()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    asyncio.run(main(target))
    print(f"saved the dashboard's screenshots in {target}")
