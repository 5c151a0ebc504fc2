"""Typed errors of the CortexOS SDK.

Every refusal by the scheduler is a :class:`Refused`; the subclasses say
why, so a caller can ``except cortexos.Throttled as e: await
asyncio.sleep(e.retry_after)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cortexos.client import Job

__all__ = [
    "CortexError",
    "Refused",
    "Denied",
    "Throttled",
    "Conflict",
    "NotFound",
    "NoScheduler",
    "JobFailed",
    "PointerError",
    "ConfigError",
]


class CortexError(Exception):
    """The base of every error the SDK raises on purpose."""


class ConfigError(CortexError, ValueError):
    """A setting that cannot work (a worker id with a dot, two credentials...)."""


class Refused(CortexError):
    """The scheduler's "no" to a submission, query or cancel."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = False,
        retry_after: float = 0.0,
        rule_id: str = "",
        job: Job | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The same request may succeed later.
        self.retryable = retryable
        #: With ``retryable``: seconds to wait before trying again (a throttle).
        self.retry_after = retry_after
        #: The policy rule that denied or throttled it.
        self.rule_id = rule_id
        #: The job concerned, when there is one (a DENIED job).
        self.job = job

    def __str__(self) -> str:
        msg = self.reason
        if self.rule_id:
            msg += f" (rule {self.rule_id})"
        if self.retry_after > 0:
            msg += f"; retry after {self.retry_after:g}s"
        return msg


class Denied(Refused):
    """The safety policy denied the job: it is recorded DENIED and never runs."""


class Throttled(Refused):
    """Not now: the safety policy or a queue bound refused the submission;
    try again after ``retry_after`` seconds."""


class Conflict(Refused):
    """The job_id is taken by a job with different content, or the job is
    already in a state the request cannot change (cancelling a finished job)."""


class NotFound(Refused):
    """No such job."""


class NoScheduler(Refused):
    """No scheduler answers on the subject (none running, or no subscriber the
    user may reach)."""


class JobFailed(CortexError):
    """A job ended in a state other than COMPLETED where a result was wanted."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} ended {job.state}: {job.error}" if job.error else f"job {job.job_id} ended {job.state}")
        self.job = job


class PointerError(CortexError):
    """A context_ptr or result_ptr the SDK cannot read or write."""
