"""easyjobs: distributed asyncio jobs with a manager that pushes work to connected workers."""

from .client import EasyJobsClient
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLost,
    EasyJobsError,
    InvalidArguments,
    ProtocolError,
    ResultTimeout,
    SerializationError,
    StoreError,
    TaskFailed,
    UnknownJob,
    UnknownTask,
    UnsupportedVersion,
)
from .jobs import JobStatus
from .manager import EasyJobsManager
from .remote import Job, RemoteTask
from .workers.worker import EasyJobsWorker

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
    "JobStatus",
    "ProtocolError",
    "RemoteTask",
    "ResultTimeout",
    "SerializationError",
    "StoreError",
    "TaskFailed",
    "UnknownJob",
    "UnknownTask",
    "UnsupportedVersion",
]
