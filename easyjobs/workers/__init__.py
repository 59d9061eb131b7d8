"""Workers: ``worker.EasyJobsWorker`` (lifecycle), ``link`` (the WebSocket to the manager) and
``runner`` (slots and task execution)."""
