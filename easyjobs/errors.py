"""Every error easyjobs raises, under one root.

    EasyJobsError
    ├── ConfigurationError      bad options at decoration or start-up time; fix the code
    ├── AuthenticationError     the peer does not know the secret (fatal, never retried)
    ├── PermissionDenied        the credential's role or queues do not allow the action
    ├── ProtocolError           the peer broke the wire protocol (close code 4000)
    │   └── UnsupportedVersion  no protocol version in common (close code 4002)
    ├── ConnectionLost          the link to the manager closed for good; pending calls fail with it
    │   └── TLSError            TLS with a manager failed: certificate, hostname, or a peer that
    │                           does not speak TLS (fatal, never retried)
    ├── SerializationError      a value msgpack cannot carry (arguments, result, default)
    ├── UnknownTask             no worker or manager has ever registered that task
    ├── UnknownJob              the manager has no job with that id
    ├── InvalidArguments        the arguments do not bind to the task's signature
    ├── TaskFailed              the task raised; carries the remote type, message and traceback
    │   ├── JobCancelled        the job was cancelled before it finished
    │   └── WorkerLost          the job lost its worker too often (it may crash or stall it)
    ├── TaskTimeout             an attempt ran over the task's ``timeout`` (also a TimeoutError)
    ├── ResultTimeout           a result did not arrive in time (also a TimeoutError)
    └── StoreError              the job store failed (details stay in the manager's log)

Errors that cross the wire travel as an ``error`` frame with a code; ``ERROR_CODES`` maps each
code to its class, so both ends agree on what a code means.
"""

from __future__ import annotations


class EasyJobsError(Exception):
    """Root of every easyjobs error: ``except EasyJobsError`` catches them all."""

    code = "internal_error"


class ConfigurationError(EasyJobsError):
    """An option is invalid; raised where the code declares it, before anything runs."""

    code = "configuration_error"


class AuthenticationError(EasyJobsError):
    """The secret does not match; retrying with the same secret cannot succeed."""

    code = "authentication_failed"


class PermissionDenied(EasyJobsError):
    """The credential is valid but its role or queues do not allow this; ask an admin for one
    that does."""

    code = "permission_denied"


class ProtocolError(EasyJobsError):
    """A frame broke the protocol: bad msgpack, unknown type, missing field, over a limit."""

    code = "protocol_error"


class UnsupportedVersion(ProtocolError):
    """The two ends share no protocol version; upgrade one of them."""

    code = "unsupported_version"


class ConnectionLost(EasyJobsError):
    """The link closed for good while a call was pending; the job may still run."""

    code = "connection_lost"


class TLSError(ConnectionLost):
    """TLS with a manager cannot work as configured: its certificate does not verify (wrong CA,
    wrong host name, expired), it refused ours, or one end speaks TLS and the other does not.

    Retrying cannot help; the message names the manager and what to change.
    """

    code = "tls_error"


class SerializationError(EasyJobsError):
    """A value cannot be encoded as msgpack (only nil, bool, int, float, str, bytes, list, map)."""

    code = "serialization_error"


class UnknownTask(EasyJobsError):
    """No worker or manager has ever registered this task in this queue."""

    code = "unknown_task"


class UnknownJob(EasyJobsError):
    """The manager has no job with this id."""

    code = "unknown_job"


class InvalidArguments(EasyJobsError):
    """The arguments do not bind to the task's advertised signature; nothing was queued."""

    code = "invalid_arguments"


class TaskTimeout(EasyJobsError, TimeoutError):
    """An attempt ran longer than its task's ``timeout``; it was cancelled and counts as failed."""

    code = "task_timeout"


class ResultTimeout(EasyJobsError, TimeoutError):
    """The result did not arrive in time; the job keeps running and can be awaited again."""

    code = "result_timeout"


class StoreError(EasyJobsError):
    """The job store failed; the manager logs the cause and tells peers only this."""

    code = "store_error"


class TaskFailed(EasyJobsError):
    """The remote task raised or could not run; ``type``, ``message``, ``traceback`` say how."""

    code = "task_failed"

    def __init__(self, type: str, message: str, traceback: str = "", job_id: str = "") -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
        self.traceback = traceback
        self.job_id = job_id


class JobCancelled(TaskFailed):
    """The job was cancelled (``job.cancel()``) before it finished."""

    code = "job_cancelled"

    def __init__(self, job_id: str = "") -> None:
        super().__init__("JobCancelled", f"job {job_id} was cancelled", "", job_id)


class WorkerLost(TaskFailed):
    """The job's worker was lost while running it, ``max_worker_losses`` times in a row.

    The job failed for good rather than take down worker after worker: look in the worker's
    log for how its process ended (a crash, an out-of-memory kill, a task blocking its loop).
    """

    code = "worker_lost"

    def __init__(self, message: str, traceback: str = "", job_id: str = "") -> None:
        super().__init__("WorkerLost", message, traceback, job_id)


ERROR_CODES: dict[str, type[EasyJobsError]] = {
    cls.code: cls
    for cls in (
        EasyJobsError,
        ConfigurationError,
        AuthenticationError,
        PermissionDenied,
        ProtocolError,
        UnsupportedVersion,
        ConnectionLost,
        SerializationError,
        UnknownTask,
        UnknownJob,
        InvalidArguments,
        ResultTimeout,
        StoreError,
    )
}


def error_from_code(code: str, message: str) -> EasyJobsError:
    """Build the exception an ``error`` frame stands for; unknown codes become the root class."""
    return ERROR_CODES.get(code, EasyJobsError)(message)
