"""The CortexOS client: submit jobs, ask about them, cancel them, wait for
their results. The same protocol as the Go client (pkg/client): a
submission is published on sys.job.submit with a Cortex-Reply-To header
naming an inbox where the scheduler answers with a JobAnswer; queries and
cancels are NATS requests on sys.job.query and sys.job.cancel.

With an ``identity`` (a client identity the server ties to its user) the
subjects are sys.job.submit.<identity>, sys.job.query.<identity> and
sys.job.cancel.<identity>, and answers arrive under _INBOX.<identity>.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cortexos import wire
from cortexos.connection import Credentials, connect
from cortexos.errors import (
    Conflict,
    Denied,
    JobFailed,
    NoScheduler,
    NotFound,
    Refused,
    Throttled,
)
from cortexos.pb.v1 import heartbeat_pb2, job_pb2
from cortexos.pointers import DEFAULT_BUCKET, BlobStore, new_key

__all__ = ["Client", "Job", "TERMINAL_STATES"]

log = logging.getLogger("cortexos.client")

#: States a job never leaves.
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "DENIED", "TIMEOUT", "CANCELLED"})

_PRIORITIES = {
    None: job_pb2.JOB_PRIORITY_UNSPECIFIED,
    "batch": job_pb2.JOB_PRIORITY_BATCH,
    "interactive": job_pb2.JOB_PRIORITY_INTERACTIVE,
    "critical": job_pb2.JOB_PRIORITY_CRITICAL,
}


def _state_name(state: int) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_") if state in job_pb2.JobState.values() else str(state)


@dataclass(frozen=True)
class Job:
    """What the scheduler knows about a job: a snapshot of its JobInfo."""

    info: job_pb2.JobInfo

    @property
    def job_id(self) -> str:
        return self.info.job_id

    @property
    def state(self) -> str:
        """PENDING, DISPATCHED, RUNNING, COMPLETED, FAILED, DENIED, TIMEOUT or CANCELLED."""
        return _state_name(self.info.state)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def attempt(self) -> int:
        return self.info.attempt

    @property
    def max_attempts(self) -> int:
        return self.info.max_attempts

    @property
    def failed_attempts(self) -> int:
        return self.info.failed_attempts

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    @property
    def result_ptr(self) -> str:
        return self.info.result_ptr

    @property
    def error(self) -> str:
        return self.info.error

    @property
    def pending_reason(self) -> str:
        return self.info.pending_reason

    @property
    def trace_id(self) -> str:
        return self.info.trace_id

    @property
    def topic(self) -> str:
        return self.info.request.topic

    @property
    def rule_id(self) -> str:
        return self.info.rule_id

    @property
    def dead_letter(self) -> bool:
        return self.info.dead_letter

    @property
    def execution_ms(self) -> int:
        return self.info.execution_ms

    def __repr__(self) -> str:
        return f"Job(job_id={self.job_id!r}, state={self.state}, attempt={self.attempt}, worker_id={self.worker_id!r})"


#: Events a watch holds for a reader that is behind; more are dropped (the
#: watch asks for the job instead).
_EVENT_BUFFER = 256


def _step(state: str) -> int:
    return {"PENDING": 0, "DISPATCHED": 1, "RUNNING": 2}.get(state, 3)


def _older(job: Job, last: Job) -> bool:
    """Whether ``job`` is an earlier version than ``last``: written before
    it, or in the same millisecond at an earlier attempt or an earlier step
    of the attempt (PENDING, DISPATCHED, RUNNING, ended)."""
    if job.info.updated_ms != last.info.updated_ms:
        return job.info.updated_ms < last.info.updated_ms
    if job.attempt != last.attempt:
        return job.attempt < last.attempt
    return _step(job.state) < _step(last.state)


async def _unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception as e:  # a closed connection has none left to end
        log.debug("unsubscribe: %s", e)


class _Follow:
    """A subscription to one job's events and the task announcing, every
    ``Client.follow_interval``, that the client follows it (a scheduler
    publishes a job's events only while someone does). ``close`` ends
    both; it may be called more than once."""

    def __init__(self, sub: Any, events: asyncio.Queue[Job], announcer: asyncio.Task[None]) -> None:
        self.sub = sub
        self.events = events
        self._announcer = announcer
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._announcer.cancel()
        await _unsubscribe(self.sub)
        await asyncio.wait([self._announcer])  # ended: no announcement after close


def _refusal(a: job_pb2.JobAnswer) -> Refused:
    job = Job(a.jobs[0]) if len(a.jobs) > 0 else None
    kw: dict[str, Any] = dict(
        retryable=a.retryable, retry_after=a.retry_after_ms / 1000.0, rule_id=a.rule_id, job=job
    )
    err = a.error or "refused"
    if job is not None and job.state == "DENIED":
        return Denied(err, **kw)
    if a.retryable and a.retry_after_ms > 0:
        return Throttled(err, **kw)
    if err.startswith("conflict") or err.startswith("job already"):
        return Conflict(err, **kw)
    if "not found" in err:
        return NotFound(err, **kw)
    return Refused(err, **kw)


class Client:
    """Submits jobs and asks the scheduler about them. Make one with
    :meth:`connect`; close it with :meth:`close` or ``async with``.

    ``identity`` is who the client says it is in its subjects; ``tenant``
    the tenant that identity is bound to in the scheduler's clients section,
    if it is (a tenant's client may read its own tenant's job events only:
    without ``tenant`` a watch cannot hear them and asks instead)."""

    #: Seconds a watch waits for a job event before it asks for the job.
    event_silence = 1.0
    #: Seconds between a watch's announcements that it follows the job
    #: (wire.FOLLOW_INTERVAL; each lasts wire.FOLLOW_TTL at the scheduler).
    follow_interval = wire.FOLLOW_INTERVAL

    def __init__(
        self,
        nc: NATS,
        *,
        identity: str | None = None,
        tenant: str = "",
        sender_id: str = "cortex-python",
        request_timeout: float = 5.0,
        max_packet_bytes: int = wire.DEFAULT_MAX_PACKET_BYTES,
        blob_bucket: str = DEFAULT_BUCKET,
        inline_input_limit: int = 256 << 10,
        own_connection: bool = False,
    ) -> None:
        if identity is not None and (not identity or any(c in identity for c in ". *>\t\r\n")):
            raise ValueError(f"identity {identity!r} must be one subject token")
        self.nc = nc
        if tenant and wire.job_event_subject(tenant, "x") is None:
            raise ValueError(f"tenant {tenant!r} must be one subject token, not \"_\"")
        self.identity = identity
        #: The tenant the client's identity is bound to, if it is: watch then
        #: hears that tenant's job events only (sys.job.event.<tenant>.<id>),
        #: all the server lets a tenant's client read (docs/security.md).
        self.tenant = tenant
        self.sender_id = sender_id
        self.request_timeout = request_timeout
        #: How long submit waits for the answer to a submission published
        #: for one before it publishes it again plainly (wire.SUBMIT_PATIENCE).
        self.submit_patience = wire.SUBMIT_PATIENCE
        self.max_packet_bytes = max_packet_bytes
        #: Inputs up to this size travel in JobRequest.payload; larger ones
        #: are put in the object store and passed as an obj:// context_ptr.
        self.inline_input_limit = inline_input_limit
        self.blobs = BlobStore(nc, bucket=blob_bucket)
        self._own = own_connection

    @classmethod
    async def connect(
        cls,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        credentials: Credentials | None = None,
        identity: str | None = None,
        **kwargs: Any,
    ) -> Client:
        """Connect to NATS at ``nats_url`` (comma-separated for several
        servers). ``credentials`` default to none; pass
        ``Credentials.from_env()`` to read NATS_USER and the rest. The other
        keywords (``tenant``, ``request_timeout``, ...) are the client's."""
        nc = await connect(nats_url, credentials, name="cortexos-client", inbox_identity=identity)
        try:
            return cls(nc, identity=identity, own_connection=True, **kwargs)
        except BaseException:
            await nc.close()
            raise

    async def close(self) -> None:
        if self._own and not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _subject(self, base: str) -> str:
        return wire.client_subject(base, self.identity)

    def _packet(self, trace_id: str | None = None) -> Any:
        return wire.new_packet(trace_id or str(uuid.uuid4()), self.sender_id)

    # ---- submit ----

    async def submit(
        self,
        topic: str,
        input: bytes | str | None = None,
        *,
        job_id: str | None = None,
        env: Mapping[str, str] | None = None,
        priority: str | None = None,
        tenant: str = "",
        job_timeout: float | None = None,
        ttl: float | None = None,
        max_attempts: int = 0,
        require: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        context_ptr: str = "",
        adapter_id: str = "",
        trace_id: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Job:
        """Submit a job to ``topic`` and return it as the scheduler recorded it
        (PENDING or DISPATCHED; the existing job if ``job_id`` repeats one
        with the same content). With ``wait``, follow it to its terminal state
        (at most ``timeout`` seconds, then TimeoutError) and return that.

        ``input`` goes in JobRequest.payload, or, past
        ``inline_input_limit``, into the object store with an obj://
        context_ptr. ``job_timeout`` is the per-attempt timeout and ``ttl``
        the job's deadline, in seconds; ``require`` and ``labels`` are what a
        worker must have to run it.

        The submission is published for an answer (a durable intake does not
        store it; the answer says the job is kept) and once more plainly,
        for the intake stream to keep, when no answer comes within
        ``submit_patience`` (3 s) or before ``request_timeout``, or the
        answer says the store failed (docs/protocol.md).

        Raises Denied, Throttled, Conflict or Refused when the scheduler
        says no, NoScheduler when none listens, TimeoutError when none
        answers within request_timeout."""
        if priority not in _PRIORITIES:
            raise ValueError(f"priority {priority!r}: want batch, interactive or critical")
        req = job_pb2.JobRequest(
            job_id=job_id or str(uuid.uuid4()),
            topic=topic,
            priority=_PRIORITIES[priority],
            context_ptr=context_ptr,
            adapter_id=adapter_id,
            tenant=tenant,
            max_attempts=max_attempts,
            timeout_ms=int((job_timeout or 0) * 1000),
            ttl_ms=int((ttl or 0) * 1000),
        )
        req.env_vars.update(env or {})
        req.required_capabilities.extend(require)
        req.required_labels.update(labels or {})
        if input is not None:
            data = input.encode() if isinstance(input, str) else bytes(input)
            if len(data) <= self.inline_input_limit:
                req.payload = data
            else:
                if context_ptr:
                    raise ValueError("input too large to go inline, and context_ptr is set: give one")
                req.context_ptr = await self.blobs.put(new_key(f"inputs/{req.job_id}"), data)
        # With wait, follow the job before submitting it, so that its
        # events are published from its first change on.
        follow = await self._follow(req.job_id) if wait else None
        try:
            job = await self._submit(req, trace_id)
        except BaseException:
            if follow is not None:
                await follow.close()
            raise
        if not wait:
            return job
        return await self._wait(job.job_id, timeout, 0.1, follow)

    async def _submit(self, req: job_pb2.JobRequest, trace_id: str | None) -> Job:
        p = self._packet(trace_id)
        p.job_request.CopyFrom(req)
        data = wire.encode(p, self.max_packet_bytes)
        inbox = self.nc.new_inbox()
        answers: asyncio.Queue[job_pb2.JobAnswer] = asyncio.Queue()

        async def on_answer(msg: Msg) -> None:
            try:
                a = wire.decode(msg.data, self.max_packet_bytes)
            except wire.PacketError as e:
                log.warning("dropped an answer on %s: %s", msg.subject, e)
                return
            if a.WhichOneof("payload") == "job_answer":
                answers.put_nowait(a.job_answer)

        subject = self._subject(wire.SUBJECT_SUBMIT)
        plain = {wire.HEADER_REPLY_TO: inbox}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        republished = False
        sub = await self.nc.subscribe(inbox, cb=on_answer)
        try:
            await self.nc.flush(timeout=int(max(1, self.request_timeout)))  # the server has the subscription before we submit
            # Published for an answer, the submission is not stored by a
            # durable intake: the scheduler's answer says it is kept.
            # Unanswered in submit_patience, or answered "the store failed",
            # it is published once more plainly, for the stream to keep; the
            # scheduler records a job once, by job_id, whatever copies come.
            await self.nc.publish(subject, data, headers={**plain, wire.HEADER_EXPECTED_STREAM: wire.ANSWERED_SUBMIT_STREAM})
            while True:
                left = deadline - loop.time()
                wait = left if republished else min(left, self.submit_patience)
                try:
                    a = await asyncio.wait_for(answers.get(), max(wait, 0))
                except asyncio.TimeoutError:
                    if not republished:
                        republished = True
                        await self.nc.publish(subject, data, headers=plain)
                        if loop.time() < deadline:
                            continue
                        await self.nc.flush(timeout=1)  # kept by the stream, recorded when a scheduler runs
                    raise TimeoutError(
                        f"no answer from a scheduler for job {req.job_id} within {self.request_timeout:g}s; "
                        "if the intake is durable it is recorded when a scheduler runs"
                    ) from None
                if a.retryable and a.retry_after_ms == 0:
                    if not republished:
                        republished = True
                        await self.nc.publish(subject, data, headers=plain)
                        continue
                    if a.error == wire.SUBMIT_RETRY_ERROR:
                        continue  # the first copy's, late: the stream has the plain one
                break
        finally:
            await sub.unsubscribe()
        if not a.ok:
            raise _refusal(a)
        if len(a.jobs) == 0:
            raise Refused("answer without a job")
        return Job(a.jobs[0])

    # ---- queries ----

    async def _ask(self, base: str, p: Any, timeout: float | None = None) -> job_pb2.JobAnswer:
        subject = self._subject(base)
        try:
            msg = await self.nc.request(subject, wire.encode(p, self.max_packet_bytes), timeout=timeout or self.request_timeout)
        except NoRespondersError:
            raise NoScheduler(f"no scheduler is answering on {subject}", retryable=True) from None
        except NatsTimeout:
            raise TimeoutError(f"no answer from a scheduler on {subject} within {timeout or self.request_timeout:g}s") from None
        try:
            reply = wire.decode(msg.data, self.max_packet_bytes)
        except wire.PacketError as e:
            raise Refused(f"unreadable answer on {subject}: {e}") from e
        if reply.WhichOneof("payload") != "job_answer":
            raise Refused(f"unexpected answer on {subject}")
        return reply.job_answer

    async def _one(self, base: str, p: Any, timeout: float | None = None) -> Job:
        a = await self._ask(base, p, timeout)
        if not a.ok:
            raise _refusal(a)
        if len(a.jobs) == 0:
            raise Refused("answer without a job")
        return Job(a.jobs[0])

    async def get(self, job_id: str) -> Job:
        """The job as the scheduler has it now. NotFound if there is none."""
        p = self._packet()
        p.job_query.job_id = job_id
        return await self._one(wire.SUBJECT_QUERY, p)

    async def list(self, state: str | None = None, limit: int = 100) -> builtins.list[Job]:
        """Up to ``limit`` jobs (the most recently updated), in ``state`` if given."""
        p = self._packet()
        if state is not None:
            p.job_query.state = job_pb2.JobState.Value("JOB_STATE_" + state.upper())
        p.job_query.limit = limit
        p.job_query.SetInParent()
        a = await self._ask(wire.SUBJECT_QUERY, p)
        if not a.ok:
            raise _refusal(a)
        return [Job(j) for j in a.jobs]

    async def workers(self) -> builtins.list[heartbeat_pb2.WorkerInfo]:
        """The live workers the scheduler knows."""
        p = self._packet()
        p.job_query.workers = True
        a = await self._ask(wire.SUBJECT_QUERY, p)
        if not a.ok:
            raise _refusal(a)
        return list(a.workers)

    async def cancel(self, job_id: str, reason: str = "") -> Job:
        """Cancel a job in any non-terminal state; its worker's handler is
        told. Conflict if it already ended, NotFound if there is none."""
        p = self._packet()
        p.job_cancel.job_id = job_id
        p.job_cancel.reason = reason
        return await self._one(wire.SUBJECT_CANCEL, p)

    def _event_subject(self, job_id: str) -> str | None:
        """Where the events of ``job_id`` are heard by this client: its
        tenant's subject with ``tenant``, else the job's whatever its tenant;
        None when the job has no event subject."""
        if self.tenant:
            return wire.job_event_subject(self.tenant, job_id)
        if wire.job_event_subject("", job_id) is None:
            return None
        return wire.job_events_of(job_id)

    async def _follow(self, job_id: str) -> _Follow | None:
        """Subscribe to the events of ``job_id``, then announce that the
        client follows it (wire.SUBJECT_JOB_FOLLOW), again every
        ``follow_interval`` until the follow is closed. The subscription is
        in place at the server on return, and the announcement sent, so a
        ``get`` afterwards misses no change after the one it reads once a
        scheduler has heard it (the watcher asks again when it hears
        nothing). None when it cannot be had (no event subject, or the
        subscription failed): the watcher asks."""
        subject = self._event_subject(job_id)
        if subject is None:
            return None
        events: asyncio.Queue[Job] = asyncio.Queue(maxsize=_EVENT_BUFFER)

        async def on_event(msg: Msg) -> None:
            try:
                p = wire.decode(msg.data, self.max_packet_bytes)
            except wire.PacketError as e:
                log.debug("dropped a job event on %s: %s", msg.subject, e)
                return
            if p.WhichOneof("payload") != "job_answer":
                return
            jobs = p.job_answer.jobs
            if len(jobs) != 1 or jobs[0].job_id != job_id:
                return
            try:
                events.put_nowait(Job(jobs[0]))
            except asyncio.QueueFull:
                pass  # the watcher asks when it hears nothing for event_silence

        try:
            sub = await self.nc.subscribe(subject, cb=on_event)
        except Exception as e:  # a closed or draining connection: asking still may work
            log.debug("no job events for %s: %s", job_id, e)
            return None
        try:
            await self.nc.flush(timeout=int(max(1, self.request_timeout)))
        except Exception as e:
            log.debug("no job events for %s: %s", job_id, e)
            await _unsubscribe(sub)
            return None
        announcement = wire.encode(wire.follow_packet(self.sender_id, job_id), self.max_packet_bytes)

        async def announce() -> None:
            try:
                await self.nc.publish(wire.SUBJECT_JOB_FOLLOW, announcement)
            except Exception as e:  # lost or refused: the next may pass, and the watcher asks meanwhile
                log.debug("follow announcement for %s not sent: %s", job_id, e)

        async def announce_again() -> None:
            while True:
                await asyncio.sleep(self.follow_interval)
                await announce()

        await announce()  # after the subscription: an event it causes is heard
        return _Follow(sub, events, asyncio.create_task(announce_again()))

    def watch(self, job_id: str, *, interval: float = 0.1) -> AsyncIterator[Job]:
        """Yield the job each time its state, attempt or pending reason
        changes, starting with the job as it is now, until it is terminal
        (the last one yielded). NotFound if there is no such job.

        The changes come from the scheduler's job events: ``watch``
        subscribes to the job's event subject (sys.job.event.<tenant>.<id>)
        and announces that it follows the job (sys.job.follow, again every
        ``follow_interval``: a scheduler publishes the events of followed
        jobs only) before it asks for the job once, so no change between is
        missed.
        Each time no event came for ``event_silence`` (1 s) it asks again
        (an event may be lost; a scheduler from before job events publishes
        none); ``interval`` is how often it asks while it has no answer yet,
        or cannot hear the job's events. A query that
        nobody answers is asked again, so a watch rides out a scheduler's
        restart. Leaving the loop early ends the subscription when the
        generator is closed (``contextlib.aclosing`` closes it at once)."""
        return self._watch(job_id, interval, None)

    async def _watch(self, job_id: str, interval: float, follow: _Follow | None) -> AsyncIterator[Job]:
        """watch, with the job already followed when ``follow`` is given
        (it is closed at the end either way)."""
        if not job_id:
            if follow is not None:
                await follow.close()
            raise ValueError("empty job id")
        loop = asyncio.get_running_loop()
        if follow is None:
            follow = await self._follow(job_id)
        events = follow.events if follow is not None else None
        last: Job | None = None
        ask_at = loop.time()  # when to ask for the job next
        try:
            while True:
                job: Job | None = None
                wait = ask_at - loop.time()
                if events is not None and last is not None:
                    # Events count once a get has said the job exists.
                    try:
                        job = events.get_nowait()
                    except asyncio.QueueEmpty:
                        if wait > 0:
                            try:
                                job = await asyncio.wait_for(events.get(), wait)
                            except asyncio.TimeoutError:
                                pass
                elif wait > 0:
                    await asyncio.sleep(wait)
                if job is not None:
                    ask_at = loop.time() + self.event_silence
                else:
                    try:
                        job = await self.get(job_id)
                    except TimeoutError:
                        job = None
                    except Refused as e:  # NoScheduler too: retryable
                        if not e.retryable:
                            raise
                        job = None
                    if (last is None and job is None) or events is None:
                        ask_at = loop.time() + interval
                    else:
                        # Events bring the changes; a job may stay RUNNING
                        # for hours without one, and is asked about once per
                        # event_silence, not every interval, all that while.
                        ask_at = loop.time() + self.event_silence
                    if job is None:
                        continue
                if last is not None and _older(job, last):
                    continue  # an event from before what was yielded
                if last is None or (job.state, job.attempt, job.pending_reason) != (last.state, last.attempt, last.pending_reason):
                    last = job
                    yield job
                if job.terminal:
                    return
        finally:
            if follow is not None:
                await follow.close()

    async def wait(self, job_id: str, *, timeout: float | None = None, interval: float = 0.1) -> Job:
        """Follow a job to its terminal state (:meth:`watch`) and return it;
        TimeoutError after ``timeout`` seconds (None: no bound)."""
        return await self._wait(job_id, timeout, interval, None)

    async def _wait(self, job_id: str, timeout: float | None, interval: float, follow: _Follow | None) -> Job:
        """wait, with the job already followed when ``follow`` is given."""
        deadline = None if timeout is None else time.monotonic() + timeout

        async def to_the_end() -> Job:
            last = None
            async for job in self._watch(job_id, interval, follow):
                last = job
            assert last is not None
            return last

        try:
            return await asyncio.wait_for(to_the_end(), None if deadline is None else max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise TimeoutError(f"job {job_id} not finished within {timeout:g}s") from None
        finally:
            if follow is not None:
                await follow.close()  # when the watch never started

    async def result(self, job_id: str, *, timeout: float | None = None) -> bytes:
        """Wait for the job and return its result: the bytes behind its
        result_ptr (data: or obj://; b"" when it has none). JobFailed if it
        did not complete; PointerError for a pointer the SDK cannot read
        (``(await client.get(id)).result_ptr`` has it)."""
        job = await self.wait(job_id, timeout=timeout)
        if job.state != "COMPLETED":
            raise JobFailed(job)
        if not job.result_ptr:
            return b""
        return await self.blobs.read(job.result_ptr)
