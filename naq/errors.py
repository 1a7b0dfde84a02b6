"""The exceptions naq raises, and the exit codes of its commands.

Every error naq raises on purpose derives from :class:`NaqError`, so callers can catch
naq's failures without catching their own. The names the original naq exported
(``JobExecutionError``, ``JobNotFoundError``, ...) are kept so its users' code runs.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
"""A command's own failure: a job or schedule not found, a server that exited."""
EXIT_CONFIG = 2
"""Bad usage: a flag, a name, an executor that cannot be loaded."""
EXIT_CONNECTION = 3
"""NATS could not be reached, or the server cannot serve naq."""
EXIT_BROKEN = 4
"""The executor broke (children dying at start-up): restarting would not help."""
EXIT_CHILD_PRELOAD = 4
"""A process-executor child whose ``--preload`` imports failed: a start-up failure."""
EXIT_CHILD_ORPHANED = 5
"""A process-executor child whose supervisor went away (it exits, even mid-job)."""
EXIT_STOP_CUT = 6
"""A supervisor whose stop outran ``shutdown_grace`` plus a few seconds (NATS frozen
or gone): it exited anyway, leaving the jobs it had not settled to redelivery after
``ack_wait`` (nothing is lost; non-zero so that the unclean stop is seen)."""


class NaqError(Exception):
    """Base class of every error naq raises on purpose."""


class ConfigurationError(NaqError, ValueError):
    """A setting, a job option or a name is invalid; the message says which and why."""


class NaqConnectionError(NaqError, ConnectionError):
    """NATS could not be reached, or the server it reached cannot serve naq."""


class ServerVersionError(NaqConnectionError):
    """The NATS server is older than naq needs (message schedules came in 2.12)."""


class SerializationError(NaqError):
    """A job's arguments or a result could not be encoded or decoded."""


class SignatureError(SerializationError):
    """A result is unsigned or its signature does not match any signing key: it is
    refused unread (never unpickled)."""


class PayloadTooLarge(SerializationError):
    """A message naq would send (a job, a result, a failed-stream copy) is bigger than
    the server's ``max_payload`` or the stream's ``max_msg_size``: it was not sent, so
    the connection is never broken by it."""


class PublishError(NaqError):
    """JetStream refused or never acknowledged a publish, after retries."""


class ServerFull(PublishError):
    """The server's JetStream storage is full (insufficient resources): nothing more
    can be stored until space is freed. A supervisor holds the outcomes it cannot
    record and pulls no more jobs until a write succeeds again."""


class QueueFull(PublishError):
    """The job stream holds ``max_stream_msgs`` jobs or ``max_stream_bytes`` already:
    the new jobs were not sent (nothing already queued is dropped)."""


class BrokenExecutor(NaqError):
    """The executor cannot run jobs any more (its children keep dying at start-up).

    The only error ``Executor.run`` may raise; the supervisor stops on it.
    """


class Retry(Exception):
    """Raised by a job to be run again after ``delay`` seconds (within ``max_retries``).

    Whatever ``retry_on`` and ``ignore_on`` say: the job asked for it.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason if delay is None else f"{reason} (in {delay}s)")


class JobExecutionError(NaqError):
    """A job ran and failed. Kept under the original naq's name."""


class JobFailed(JobExecutionError):
    """The job failed for good; ``remote_traceback`` is the traceback from the worker."""

    def __init__(self, job_id: str, error: str, remote_traceback: str | None) -> None:
        self.job_id = job_id
        self.error = error
        self.remote_traceback = remote_traceback
        message = f"job {job_id} failed: {error}"
        if remote_traceback:
            message += f"\n\nRemote traceback:\n{remote_traceback}"
        super().__init__(message)


class JobCancelled(JobFailed):
    """The job was cancelled (by ``cancel_job``, or because a dependency failed)."""


class JobNotFound(NaqError, LookupError):
    """No result is stored for this job id: unknown, not finished yet, or expired."""


JobNotFoundError = JobNotFound
"""The original naq's name for :class:`JobNotFound`."""


class JobPending(JobNotFound):
    """The job exists but has no result yet; ``fetch_job_result(..., timeout=)`` waits."""


class ResultTimeout(NaqError, TimeoutError):
    """``fetch_job_result(..., timeout=)`` waited the whole timeout and no result came."""


class QueueNotFound(NaqError, LookupError):
    """No such queue in the namespace: no supervisor ever served it, and nothing waits,
    is delayed or failed on it. Not a ``JobNotFound``: a caller catching that for a
    job id must not mistake a misspelt queue name for a missing job."""
