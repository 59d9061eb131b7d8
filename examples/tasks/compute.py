# examples/tasks/compute.py — the subprocess template from the original easyjobs docs,
# for the ETL example's ``compute`` task (run by hand: python compute.py --kwargs '{"data": {}}').
import time

from easyjobs.workers.task import subprocess


@subprocess
def work(data: dict):
    """
    insert blocking / non-blocking work here
    """
    time.sleep(1) # Blocking
    return {'result': f'I slept for 1 second - blocking with {data}'}

if __name__ == '__main__':
    work()
