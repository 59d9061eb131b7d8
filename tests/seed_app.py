"""The worker example of the original easyjobs docs (``shared/seed/tasks.md``), copied verbatim
inside a factory so each test builds its own app. Changed: the manager's host, port and secrets
come from the arguments, and ``WORKER_TASK_DIR`` points at a test directory. The prints and
f-strings are the seed's own. The task bodies look ``asyncio`` up in this module's globals, so a
test can scale their sleeps."""

# ruff: noqa: T201, F541, E401, I001

import asyncio, os
from fastapi import FastAPI
from easyjobs.workers.worker import EasyJobsWorker


def build_server(manager_host: str, manager_port: int, secret: str, task_dir: str) -> FastAPI:
    server = FastAPI()

    @server.on_event('startup')
    async def setup():
        worker = await EasyJobsWorker.create(
            server,
            server_secret=secret,
            manager_host=manager_host,
            manager_port=manager_port,
            manager_secret=secret,
            jobs_queue='ETL',
            max_tasks_per_worker=5
        )

        every_minute = '* * * * *'
        default_args = {'kwargs': {'url': ['http://stats']}}

        async def get_data(url):
            print(f"get_data: {url}")
            return {'a': 1, 'b': 2, 'c': 3}
        async def load_db(data: dict):
            #await db.tables['transformed'].insert(**data)
            return f"data {data} loaded to db"
        async def send_email(address: str, message: str):
            return f"email sent to {address}"

        @worker.task(run_after=['transform'], schedule=every_minute, default_args=default_args)
        async def extract(url: str):
            print(f"extract started")
            data = await get_data(url)
            print(f"extract finished")
            return {'data': data}

        @worker.task(run_after=['load'])
        async def transform(data: dict):
            print(f"transform started")
            for k in data.copy():
                data[k] = int(data[k]) + 2
            print(f"transform finished")
            return {'data': data}

        @worker.task(on_failure='failure_notify', run_after=['compute'])
        async def load(data):
            print(f"load started")
            await load_db(data)
            print(f"load finished")
            return {'data': data}

        @worker.task()
        async def failure_notify(job_failed):
            await send_email('admin@company.io', job_failed)
            return job_failed

        @worker.task()
        async def deploy_environment():
            print(f"deploy_environment - started")
            await asyncio.sleep(5)
            print(f"deploy_environment - completed")
            return f"deploy_environment - completed"

        @worker.task()
        async def prepare_db():
            print(f"prepare_db - started")
            await asyncio.sleep(5)
            print(f"prepare_db - completed")
            return f"prepare_db - completed"

        @worker.task(run_before=['deploy_environment', 'prepare_db'])
        async def configure_environment():
            print(f"configure_environment - starting")
            await asyncio.sleep(5)
            print(f"configure_environment - finished")
            return f"configure_environment - finished"

        os.environ['WORKER_TASK_DIR'] = task_dir

        @worker.task(subprocess=True, run_before=['configure_environment'])
        async def compute(data: dict):
            pass

        @worker.task()
        async def pipeline():
            print(f"pipline started")
            result = await compute(data={'test': 'data'})
            print(f"pipline - result is {result} - finished")
            return result

    return server
