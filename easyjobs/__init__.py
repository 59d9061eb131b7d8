"""easyjobs: distributed asyncio jobs with a manager that pushes work to connected workers.

Every public name is importable from here; they load on first use, so that importing a light
module (``easyjobs.workers.task`` in a subprocess, ``easyjobs.protocol``) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "EasyJobsClient": "easyjobs.client",
    "EasyJobsManager": "easyjobs.manager",
    "EasyJobsWorker": "easyjobs.workers.worker",
    "Job": "easyjobs.remote",
    "RemoteTask": "easyjobs.remote",
    "JobStatus": "easyjobs.jobs",
    "configure_logging": "easyjobs.logs",
    **{
        name: "easyjobs.errors"
        for name in (
            "AuthenticationError", "ConfigurationError", "ConnectionLost", "EasyJobsError",
            "InvalidArguments", "JobCancelled", "PermissionDenied", "ProtocolError",
            "ResultTimeout", "SerializationError", "StoreError", "TaskFailed", "TaskTimeout",
            "TLSError", "UnknownJob", "UnknownTask", "UnsupportedVersion", "WorkerLost",
        )
    },
}

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionLost",
    "EasyJobsClient",
    "EasyJobsError",
    "EasyJobsManager",
    "EasyJobsWorker",
    "InvalidArguments",
    "Job",
    "JobCancelled",
    "JobStatus",
    "PermissionDenied",
    "ProtocolError",
    "RemoteTask",
    "ResultTimeout",
    "SerializationError",
    "StoreError",
    "TaskFailed",
    "TaskTimeout",
    "TLSError",
    "UnknownJob",
    "UnknownTask",
    "UnsupportedVersion",
    "WorkerLost",
    "configure_logging",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'easyjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


if TYPE_CHECKING:
    from .client import EasyJobsClient
    from .errors import (
        AuthenticationError,
        ConfigurationError,
        ConnectionLost,
        EasyJobsError,
        InvalidArguments,
        JobCancelled,
        PermissionDenied,
        ProtocolError,
        ResultTimeout,
        SerializationError,
        StoreError,
        TaskFailed,
        TaskTimeout,
        TLSError,
        UnknownJob,
        UnknownTask,
        UnsupportedVersion,
        WorkerLost,
    )
    from .jobs import JobStatus
    from .logs import configure_logging
    from .manager import EasyJobsManager
    from .remote import Job, RemoteTask
    from .workers.worker import EasyJobsWorker
