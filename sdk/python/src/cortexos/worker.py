"""The CortexOS worker runtime for Python: the protocol of the Go runtime
(pkg/worker), not a subset of it.

- Takes jobs on each handler's topic in the topic's queue group
  (``workers-<topic without job.>``, shared with Go workers of the topic)
  and, when ``direct``, on its own subject sys.worker.<id>.job.
- Confirms each dispatch on its reply subject with a JobAck once the job
  has run ``ack_delay`` (a shorter job is confirmed by its result), so the
  scheduler moves it to RUNNING and starts its lease.
- Refuses (a retryable JobAnswer on the reply subject) a dispatch it cannot
  run: lacking a required capability or label, no slot free within
  ``slot_wait`` of the dispatch's sending, or draining. The scheduler offers
  it elsewhere.
- Heartbeats on sys.heartbeat.<kind>.<id> every ``lease_interval`` while it
  holds jobs, listing them (their leases), every ``heartbeat_interval``
  otherwise, with its capacity, capabilities, labels, topics and load.
- Publishes each result on sys.job.result.<id> with the attempt it is for.
- Cancels a job's handler when the scheduler says so on
  sys.worker.<id>.cancel, and at the attempt's timeout.
- On SIGTERM or SIGINT drains: takes no more jobs (heartbeats ``draining``),
  lets held jobs finish within ``shutdown_grace``, then cancels the rest and
  hands them back (CANCELLED results the scheduler requeues). A second
  signal hands everything back at once. It never waits on a handler that
  ignores cancellation for more than ``stop_timeout`` past the grace.
- Packets that do not decode, are over ``max_packet_bytes`` or carry no
  known payload are counted in ``stats`` and logged, never raised.

Async handlers run on the event loop; synchronous ones on a bounded pool of
daemon threads, so a handler that blocks (``time.sleep``, a C extension)
does not hold back heartbeats, confirmations or other jobs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue
import resource
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cortexos import wire
from cortexos.connection import Credentials, connect
from cortexos.errors import ConfigError, CortexError
from cortexos.pb.v1 import heartbeat_pb2, job_pb2, packet_pb2
from cortexos.pointers import DEFAULT_BUCKET, MAX_POINTER_BYTES, BlobStore, Pointer, data_url, new_key

__all__ = ["Worker", "JobContext", "Cancelled", "WorkerStats", "HandlerResult"]

log = logging.getLogger("cortexos.worker")


class _KindLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A worker's log: each line starts with ``[WORKER <kind>]``, as the
    design document's workers print theirs (Go: internal/logging)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kind = str(self.extra["kind"]).replace("%", "%%") if self.extra else "?"
        return f"[WORKER {kind}] {msg}", kwargs

#: What a handler may return: the result's bytes (a str is UTF-8), a
#: Pointer to pass through, or None for no result.
HandlerResult = Union[bytes, bytearray, memoryview, str, Pointer, None]
Handler = Callable[["JobContext"], Union[Awaitable[HandlerResult], HandlerResult]]
H = TypeVar("H", bound=Handler)

_BAD_TOKEN = set(". *>\t\r\n")


class Cancelled(CortexError):
    """Raised by :meth:`JobContext.raise_if_cancelled` in a handler whose job
    was cancelled, timed out or is being handed back."""


# Why a held job's handler was told to stop: the result's status and error.
_CANCELLED, _SHUTDOWN, _TIMEOUT = "job cancelled", "worker shutting down", "timed out"


@dataclass
class WorkerStats:
    """What the worker did; every field counts up from start."""

    received: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    refused: int = 0
    publish_errors: int = 0
    malformed: int = 0
    too_large: int = 0
    unknown_payload: int = 0
    active: int = 0


class JobContext:
    """One attempt of a job, as a handler sees it."""

    def __init__(self, worker: Worker, req: job_pb2.JobRequest, trace_id: str, held: _Held) -> None:
        self._worker = worker
        self._held = held
        #: The JobRequest as dispatched.
        self.request = req
        self.job_id: str = req.job_id
        self.attempt: int = req.attempt
        self.topic: str = req.topic
        self.tenant: str = req.tenant
        self.trace_id = trace_id
        self.worker_id = worker.worker_id
        self.env: dict[str, str] = dict(req.env_vars)
        #: When the attempt times out, in time.time() seconds; None: never.
        self.deadline: float | None = time.time() + req.timeout_ms / 1000.0 if req.timeout_ms > 0 else None
        #: Set when the job is cancelled, times out or is handed back: for
        #: synchronous handlers (``job.cancel_event.wait(1)``).
        self.cancel_event = held.thread_event
        self._input: bytes | None = None

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop: the job was cancelled, timed
        out, or the worker is handing it back."""
        return self._held.cause is not None

    @property
    def cancel_reason(self) -> str | None:
        return self._held.cause

    def remaining(self) -> float | None:
        """Seconds left before the attempt's timeout; None without one."""
        return None if self.deadline is None else self.deadline - time.time()

    def raise_if_cancelled(self) -> None:
        """Raise Cancelled if the handler should stop."""
        if self._held.cause is not None:
            raise Cancelled(self._held.cause)

    async def wait_cancelled(self) -> None:
        """Return when the handler should stop (async handlers are also
        cancelled: asyncio.CancelledError at their next await)."""
        await self._held.async_event.wait()

    async def input(self) -> bytes:
        """The job's input: JobRequest.payload when it has one, else the bytes
        behind context_ptr (``data:`` or ``obj://``), else b"". PointerError
        for a pointer the SDK cannot read."""
        if self._input is None:
            if self.request.payload:
                self._input = bytes(self.request.payload)
            elif self.request.context_ptr:
                self._input = await self._worker.blobs.read(self.request.context_ptr)
            else:
                self._input = b""
        return self._input

    async def input_text(self) -> str:
        return (await self.input()).decode()

    def __repr__(self) -> str:
        return f"JobContext(job_id={self.job_id!r}, attempt={self.attempt}, topic={self.topic!r})"


class _Held:
    """A job attempt the worker holds."""

    __slots__ = ("job_id", "attempt", "reply", "trace_id", "cause", "thread_event", "async_event", "inner", "timers")

    def __init__(self, job_id: str, attempt: int, reply: str, trace_id: str) -> None:
        self.job_id, self.attempt, self.reply, self.trace_id = job_id, attempt, reply, trace_id
        self.cause: str | None = None
        self.thread_event = threading.Event()
        self.async_event = asyncio.Event()
        self.inner: asyncio.Future[Any] | None = None  # the async handler's task
        self.timers: list[asyncio.TimerHandle] = []

    def end(self, cause: str) -> None:
        """Tell the handler to stop; the first cause stays."""
        if self.cause is not None:
            return
        self.cause = cause
        self.thread_event.set()
        self.async_event.set()
        if self.inner is not None and not self.inner.done():
            self.inner.cancel()


class _ThreadPool:
    """At most ``size`` daemon threads running synchronous handlers. Daemon
    threads, unlike concurrent.futures', do not keep the process alive at
    exit when a handler ignores cancellation."""

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = 0
        self._busy = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def call() -> None:
            try:
                value = fn()
            except BaseException as e:  # handed to the loop, whatever it is
                ok, value = False, e
            else:
                ok = True
            try:
                loop.call_soon_threadsafe(done, ok, value)
            except RuntimeError:  # the loop closed under a handler that outlived the worker
                pass

        with self._lock:
            self._busy += 1
            if self._busy > self._threads and self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._loop, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._work.put(call)
        return fut

    def _loop(self) -> None:
        while True:
            fn = self._work.get()
            if fn is None:
                return
            fn()
            with self._lock:
                self._busy -= 1

    def close(self) -> None:
        with self._lock:
            n, self._threads = self._threads, 0
        for _ in range(n):
            self._work.put(None)


class _CPUMeter:
    """The process's CPU use since the last reading, in percent of the machine."""

    def __init__(self) -> None:
        self._wall = 0.0
        self._cpu = 0.0

    def load(self) -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu, now = ru.ru_utime + ru.ru_stime, time.monotonic()
        prev_wall, prev_cpu = self._wall, self._cpu
        self._wall, self._cpu = now, cpu
        if prev_wall == 0 or now <= prev_wall:
            return 0.0
        pct = (cpu - prev_cpu) / (now - prev_wall) / (os.cpu_count() or 1) * 100
        return min(max(pct, 0.0), 100.0)


def _default_id(kind: str) -> str:
    host = socket.gethostname() or "local"
    raw = f"worker-{kind}-{host}-{uuid.uuid4().hex[:8]}"
    return "".join("-" if c in _BAD_TOKEN else c for c in raw)


class Worker:
    """Runs handlers for job topics. Register handlers with
    :meth:`handler`, then ``await worker.run()``.

    ``capacity`` jobs run at once (reported in heartbeats; the scheduler
    places no more). ``capabilities`` and ``labels`` are reported and
    checked against each job's requirements. Times are in seconds.
    """

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        credentials: Credentials | None = None,
        nc: NATS | None = None,
        kind: str = "python",
        worker_id: str | None = None,
        capacity: int = 4,
        capabilities: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        pool: str = "",
        region: str = "local",
        type: str = "cpu",
        direct: bool = True,
        heartbeat_interval: float = 5.0,
        lease_interval: float = 0.5,
        slot_wait: float = 0.2,
        ack_delay: float = 0.02,
        shutdown_grace: float = 10.0,
        stop_timeout: float = 2.0,
        max_packet_bytes: int = wire.DEFAULT_MAX_PACKET_BYTES,
        blob_bucket: str = DEFAULT_BUCKET,
        result_inline_limit: int = 2 << 10,
    ) -> None:
        creds = credentials or Credentials()
        if not kind or any(c in _BAD_TOKEN for c in kind):
            raise ConfigError(f"kind {kind!r} must be one subject token")
        if worker_id is None:
            worker_id = creds.user or _default_id(kind)  # a server that ties users to subjects names the worker so
        if not worker_id or any(c in _BAD_TOKEN for c in worker_id):
            raise ConfigError(f"worker id {worker_id!r} must be one subject token: no dots, spaces or wildcards")
        if capacity < 1:
            raise ConfigError(f"capacity {capacity} must be at least 1")
        caps = [kind] if capabilities is None else list(capabilities)
        for c in caps:
            if not c or c.strip() != c:
                raise ConfigError(f"capability {c!r} must be non-empty, without surrounding blanks")
        lbls = dict(labels or {})
        for k, v in lbls.items():
            if not k or k.strip() != k or "=" in k or "," in k:
                raise ConfigError(f"label key {k!r} must be non-empty, without '=', ',' or surrounding blanks")
            if v.strip() != v:
                raise ConfigError(f"label {k}={v!r}: the value has surrounding blanks")
        if any(c.isspace() for c in pool):
            raise ConfigError(f"pool {pool!r} must not contain blanks")
        for name, secs in (("heartbeat_interval", heartbeat_interval), ("lease_interval", lease_interval),
                           ("slot_wait", slot_wait), ("ack_delay", ack_delay), ("shutdown_grace", shutdown_grace)):
            if secs <= 0:
                raise ConfigError(f"{name} must be positive")
        self.nats_url = nats_url
        self.credentials = creds
        self.kind = kind
        self._log = _KindLog(log, {"kind": kind})
        self.worker_id = worker_id
        self.capacity = capacity
        self.capabilities = caps
        self.labels = lbls
        self.pool = pool
        self.region, self.type = region, type
        self.direct = direct
        self.heartbeat_interval = heartbeat_interval
        self.lease_interval = min(lease_interval, heartbeat_interval)
        self.slot_wait, self.ack_delay = slot_wait, ack_delay
        self.shutdown_grace, self.stop_timeout = shutdown_grace, stop_timeout
        self.max_packet_bytes = max_packet_bytes
        self.blob_bucket = blob_bucket
        self.result_inline_limit = result_inline_limit
        self.stats = WorkerStats()
        #: True while the worker takes jobs: subscribed, not draining.
        self.ready = False

        self._nc = nc
        self._own_nc = nc is None
        self._handlers: dict[str, tuple[Handler, bool, str]] = {}  # topic -> (fn, is_async, queue group)
        self._held: dict[tuple[str, int], _Held] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._draining = False
        self._handed_back = False
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._handback_evt: asyncio.Event | None = None
        self._slot_free: asyncio.Condition | None = None
        self._cpu = _CPUMeter()
        self._pool = _ThreadPool(capacity, f"cortexos-{kind}")
        self.blobs: BlobStore = None  # type: ignore[assignment]  # set in run()

    # ---- handlers ----

    def handler(self, topic: str, *, queue_group: str | None = None) -> Callable[[H], H]:
        """Register the decorated function for ``topic`` (``job.<name>``). It
        takes a :class:`JobContext` and returns the result (bytes, str,
        :class:`Pointer` or None) or raises to fail the attempt. ``async def``
        handlers run on the event loop, plain functions on the thread pool."""

        def register(fn: H) -> H:
            self.add_handler(topic, fn, queue_group=queue_group)
            return fn

        return register

    def add_handler(self, topic: str, fn: Handler, *, queue_group: str | None = None) -> None:
        if not topic.startswith(wire.JOB_SUBJECT_PREFIX) or any(
            t in ("", "*", ">") or any(c.isspace() for c in t) for t in topic.split(".")
        ):
            raise ConfigError(f"topic {topic!r}: want job.<name>, tokens without blanks or wildcards")
        if topic in self._handlers:
            raise ConfigError(f"topic {topic} has a handler already")
        group = queue_group or "workers-" + topic.removeprefix(wire.JOB_SUBJECT_PREFIX)
        self._handlers[topic] = (fn, inspect.iscoroutinefunction(fn), group)

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    # ---- lifecycle ----

    def stop(self) -> None:
        """Begin draining (as SIGTERM does); run() returns when it is done.
        Called twice, hands every held job back at once."""
        if self._stop is None:
            return
        if self._stop.is_set():
            assert self._force is not None
            self._force.set()
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Take jobs until stop() or SIGTERM/SIGINT, then drain and return."""
        if not self._handlers:
            raise ConfigError("no handlers: register one with @worker.handler(topic)")
        loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        self._slot_free = asyncio.Condition()
        self._draining = self._handed_back = False
        signals: list[signal.Signals] = []
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.nats_url, self.credentials, name=f"cortexos-worker-{self.worker_id}")
            self.blobs = BlobStore(self._nc, bucket=self.blob_bucket, max_bytes=64 << 20)
            await self._serve()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._pool.close()
            if self._own_nc and self._nc is not None and not self._nc.is_closed:
                try:
                    await asyncio.wait_for(self._nc.drain(), 5)
                except Exception:
                    await self._nc.close()
            if self._own_nc:
                self._nc = None

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            self._log.warning("%s again: handing back every held job now", sig.name)
        else:
            self._log.info("%s: draining (again to stop at once)", sig.name)
        self.stop()

    async def _serve(self) -> None:
        nc = self._nc
        assert nc is not None and self._stop is not None and self._force is not None
        cancel_sub = await nc.subscribe(wire.worker_cancel_subject(self.worker_id), cb=self._on_cancel)
        job_subs: list[Subscription] = []
        for topic, (_, _, group) in self._handlers.items():
            job_subs.append(await nc.subscribe(topic, queue=group, cb=self._dispatch_cb(topic)))
        if self.direct:
            job_subs.append(await nc.subscribe(wire.worker_job_subject(self.worker_id), cb=self._dispatch_cb(None)))
        await nc.flush()
        self.ready = True
        self._log.info(
            "running worker_id=%s topics=%s capacity=%d capabilities=%s labels=%s direct=%s",
            self.worker_id, self.topics, self.capacity, self.capabilities, self.labels, self.direct,
        )
        hb = asyncio.create_task(self._heartbeat_loop())
        try:
            await self._stop.wait()
            self._log.info("shutting down worker_id=%s in_flight=%d", self.worker_id, len(self._held))
            self._draining, self.ready = True, False
            await self._send_heartbeat()  # tell the schedulers at once: no more jobs here
            loop = asyncio.get_running_loop()
            grace = loop.call_later(self.shutdown_grace, self._hand_back, "shutdown grace over")
            force_task = asyncio.create_task(self._force.wait())
            self._handback_evt = asyncio.Event()
            handback_task = asyncio.create_task(self._handback_evt.wait())
            # No new jobs; dispatches already received are refused (draining)
            # or, if they may not be, held and run.
            drain_task = asyncio.create_task(self._drain(job_subs))
            try:
                while True:
                    waiting: set[asyncio.Future[Any]] = set(self._tasks)
                    if not drain_task.done():
                        waiting.add(drain_task)
                    if not waiting:
                        break
                    done, _ = await asyncio.wait(waiting | {force_task, handback_task}, return_when=asyncio.FIRST_COMPLETED)
                    if force_task in done:
                        self._hand_back("stopped at once")
                        break
                    if self._handed_back:
                        break
                await self._wait_after_handback()
            finally:
                grace.cancel()
                force_task.cancel()
                handback_task.cancel()
                drain_task.cancel()
        finally:
            hb.cancel()
            try:
                await hb
            except asyncio.CancelledError:
                pass
            try:
                await cancel_sub.unsubscribe()
            except Exception:
                pass
            if not nc.is_closed:
                await self._send_heartbeat()  # the last, with the final load
            self._log.info("stopped worker_id=%s", self.worker_id)

    async def _drain(self, subs: list[Subscription]) -> None:
        for sub in subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as e:
                self._log.warning("draining a subscription: %s", e)

    def _hand_back(self, why: str) -> None:
        if self._handed_back:
            return
        self._handed_back = True
        if self._handback_evt is not None:
            self._handback_evt.set()
        if self._held:
            self._log.warning("%s, handing back %d unfinished jobs", why, len(self._held))
        for h in list(self._held.values()):
            h.end(_SHUTDOWN)

    async def _wait_after_handback(self) -> None:
        """After the hand-back, wait up to stop_timeout for handlers to return;
        then publish the hand-back of those that did not (synchronous
        handlers that ignore cancellation) and stop waiting for them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.stop_timeout)
        for h in list(self._held.values()):
            self._log.warning("handler of job %s ignores cancellation: handing it back without it", h.job_id)
            await self._publish_result(h, job_pb2.JobResult(
                job_id=h.job_id, status=job_pb2.JOB_STATUS_CANCELLED, worker_id=self.worker_id,
                attempt=h.attempt, error=_SHUTDOWN,
            ))
            self._release(h)
        for t in pending:
            t.cancel()

    # ---- jobs ----

    def _dispatch_cb(self, topic: str | None) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            try:
                p = wire.decode(msg.data, self.max_packet_bytes)
            except wire.PacketError as e:
                self._count(e)
                self._log.warning("dropped packet on %s (%d bytes): %s", msg.subject, len(msg.data), e)
                return
            await self._on_job(p, msg.reply, topic)

        return cb

    def _count(self, e: wire.PacketError) -> None:
        if isinstance(e, wire.TooLarge):
            self.stats.too_large += 1
        elif isinstance(e, wire.UnknownPayload):
            self.stats.unknown_payload += 1
        else:
            self.stats.malformed += 1

    def _lacks(self, req: job_pb2.JobRequest) -> str:
        for c in req.required_capabilities:
            if c not in self.capabilities:
                return f"capability {c}"
        for k, v in req.required_labels.items():
            if self.labels.get(k) != v:
                return f"label {k}={v}"
        return ""

    async def _refuse(self, reply: str, trace_id: str, reason: str) -> None:
        self.stats.refused += 1
        out = wire.new_packet(trace_id, self.worker_id)
        out.job_answer.error = reason
        out.job_answer.retryable = True
        try:
            await self._nc.publish(reply, wire.encode(out, self.max_packet_bytes))  # type: ignore[union-attr]
        except Exception as e:
            self._log.warning("refusing a job failed: %s", e)

    async def _on_job(self, p: packet_pb2.BusPacket, reply: str, topic: str | None) -> None:
        if p.WhichOneof("payload") != "job_request":
            self._log.warning("ignored packet that is not a job request from %s", p.sender_id)
            return
        req = p.job_request
        self.stats.received += 1
        may_refuse = req.attempt > 0 and bool(reply)
        entry = self._handlers.get(topic or req.topic)
        if entry is None:
            if may_refuse:
                await self._refuse(reply, p.trace_id, f"worker {self.worker_id} has no handler for {req.topic}")
                return
            self._log.warning("no handler for %s: job %s dropped", req.topic, req.job_id)
            return
        missing = self._lacks(req)
        if missing and may_refuse:
            # Delivered through the topic's queue group to a worker that cannot
            # run it: hand it back, so that it is placed again.
            await self._refuse(reply, p.trace_id, f"worker {self.worker_id} lacks {missing}")
            return
        sent = p.created_at.seconds + p.created_at.nanos / 1e9 if p.HasField("created_at") else 0.0
        if not await self._acquire(may_refuse, sent):
            await self._refuse(reply, p.trace_id, "draining" if self._draining else "at capacity")
            return
        self.stats.active += 1
        h = _Held(req.job_id, req.attempt, reply, p.trace_id)
        self._held[(h.job_id, h.attempt)] = h
        loop = asyncio.get_running_loop()
        if reply:
            h.timers.append(loop.call_later(self.ack_delay, self._confirm, h))
        if req.timeout_ms > 0:
            h.timers.append(loop.call_later(req.timeout_ms / 1000.0, h.end, _TIMEOUT))
        if self._handed_back:
            h.end(_SHUTDOWN)
        task = asyncio.create_task(self._run(h, req, p.trace_id, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acquire(self, may_refuse: bool, sent: float) -> bool:
        """Take a slot: at once if one is free; else, when the job may be
        refused, within what is left of slot_wait since the dispatch was sent
        (not since it reached this callback: dispatches queued behind a full
        worker would otherwise be taken long after the scheduler gave up on
        them); else whenever one frees."""
        cond = self._slot_free
        assert cond is not None
        if self._draining and may_refuse:
            return False
        if len(self._held) < self.capacity:
            return True
        wait = self.slot_wait - max(time.time() - sent, 0.0) if sent else self.slot_wait
        if may_refuse and wait <= 0:
            return False
        async with cond:
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: len(self._held) < self.capacity or (self._draining and may_refuse)),
                    wait if may_refuse else None,
                )
            except asyncio.TimeoutError:
                return False
        return not (self._draining and may_refuse)

    def _confirm(self, h: _Held) -> None:
        if not h.reply or (h.job_id, h.attempt) not in self._held:
            return
        reply, h.reply = h.reply, ""
        out = wire.new_packet(h.trace_id, self.worker_id)
        out.job_ack.job_id, out.job_ack.attempt, out.job_ack.worker_id = h.job_id, h.attempt, self.worker_id
        task = asyncio.ensure_future(self._publish(reply, out, "confirming job " + h.job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, subject: str, p: packet_pb2.BusPacket, what: str) -> bool:
        try:
            await self._nc.publish(subject, wire.encode(p, self.max_packet_bytes))  # type: ignore[union-attr]
            return True
        except Exception as e:
            self.stats.publish_errors += 1
            self._log.warning("%s failed: %s", what, e)
            return False

    async def _run(self, h: _Held, req: job_pb2.JobRequest, trace_id: str, entry: tuple[Handler, bool, str]) -> None:
        fn, is_async, _ = entry
        job = JobContext(self, req, trace_id, h)
        start = time.monotonic()
        res = job_pb2.JobResult(job_id=req.job_id, status=job_pb2.JOB_STATUS_COMPLETED, worker_id=self.worker_id, attempt=req.attempt)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            self._log.debug("job job_id=%s topic=%s attempt=%d trace_id=%s", req.job_id, req.topic, req.attempt, trace_id)
        try:
            try:
                if h.cause is not None:
                    raise Cancelled(h.cause)
                if is_async:
                    h.inner = asyncio.ensure_future(fn(job))  # type: ignore[arg-type]
                    value = await h.inner
                else:
                    value = await self._pool.submit(lambda: fn(job))
                    if inspect.isawaitable(value):  # a plain function that returned a coroutine
                        value = await value
                res.result_ptr = await self._store_result(req, value)
            except asyncio.CancelledError:
                if h.cause is None:
                    raise  # the worker itself is being torn down
                raise Cancelled(h.cause) from None
        except Exception as e:  # the handler's failure is the job's, never the worker's
            cause = h.cause
            if cause == _TIMEOUT:
                res.status = job_pb2.JOB_STATUS_TIMEOUT
                res.error = f"timed out after {req.timeout_ms}ms: {_describe(e)}"
                self.stats.timed_out += 1
            elif cause in (_CANCELLED, _SHUTDOWN):
                res.status = job_pb2.JOB_STATUS_CANCELLED  # a shutdown's is a hand-back
                res.error = cause
                self.stats.cancelled += 1
            else:
                res.status = job_pb2.JOB_STATUS_FAILED
                res.error = _describe(e)
                self.stats.failed += 1
            self._log.warning("job did not complete job_id=%s status=%s err=%s", req.job_id,
                        job_pb2.JobStatus.Name(res.status), res.error)
        else:
            self.stats.completed += 1
        res.execution_ms = int((time.monotonic() - start) * 1000)
        if (h.job_id, h.attempt) not in self._held:
            return  # handed back without waiting for this handler (stop_timeout)
        await self._publish_result(h, res)
        if debug:
            self._log.debug("result job_id=%s status=%s execution_ms=%d", req.job_id,
                      job_pb2.JobStatus.Name(res.status), res.execution_ms)
        self._release(h)

    async def _publish_result(self, h: _Held, res: job_pb2.JobResult) -> None:
        out = wire.new_packet(h.trace_id, self.worker_id)
        out.job_result.CopyFrom(res)
        try:
            data = wire.encode(out, self.max_packet_bytes)
        except wire.TooLarge as e:  # an enormous error message: keep its head
            out.job_result.error = res.error[:4096] + " [truncated]"
            out.job_result.result_ptr = ""
            out.job_result.status = job_pb2.JOB_STATUS_FAILED
            self._log.warning("result of %s too large: %s", h.job_id, e)
            data = wire.encode(out, 0)
        try:
            await self._nc.publish(wire.result_subject(self.worker_id), data)  # type: ignore[union-attr]
        except Exception as e:
            self.stats.publish_errors += 1
            self._log.error("publishing result of %s failed: %s", h.job_id, e)

    def _release(self, h: _Held) -> None:
        if self._held.pop((h.job_id, h.attempt), None) is None:
            return
        for t in h.timers:
            t.cancel()
        h.reply = ""
        self.stats.active -= 1
        cond = self._slot_free
        if cond is not None:
            async def notify() -> None:
                async with cond:
                    cond.notify_all()

            task = asyncio.ensure_future(notify())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _store_result(self, req: job_pb2.JobRequest, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, Pointer):
            return str(value.ptr)
        if isinstance(value, str):
            data, media = value.encode(), "text/plain;charset=utf-8"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, media = bytes(value), "application/octet-stream"
        else:
            raise TypeError(f"handler returned {type(value).__name__}: want bytes, str, cortexos.Pointer or None")
        if len(data) <= self.result_inline_limit:
            ptr = data_url(data, media)
            if len(ptr) <= MAX_POINTER_BYTES:  # the scheduler's bound on result_ptr
                return ptr
        return await self.blobs.put(new_key(f"results/{req.job_id}/{req.attempt}"), data)

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            p = wire.decode(msg.data, self.max_packet_bytes)
        except wire.PacketError as e:
            self._count(e)
            self._log.warning("dropped packet on %s: %s", msg.subject, e)
            return
        if p.WhichOneof("payload") != "job_cancel":
            return
        c = p.job_cancel
        for h in list(self._held.values()):
            if h.job_id == c.job_id:
                self._log.info("cancelling job job_id=%s attempt=%d reason=%s", h.job_id, h.attempt, c.reason)
                h.end(_CANCELLED)

    # ---- heartbeats ----

    async def _heartbeat_loop(self) -> None:
        last = await self._send_heartbeat()
        while True:
            await asyncio.sleep(self.lease_interval)
            now = time.monotonic()
            if self._held or now - last >= self.heartbeat_interval - self.lease_interval / 2:
                last = await self._send_heartbeat()

    def heartbeat(self) -> heartbeat_pb2.Heartbeat:
        """The heartbeat the worker would send now."""
        hb = heartbeat_pb2.Heartbeat(
            worker_id=self.worker_id,
            region=self.region,
            type=self.type,
            cpu_load=self._cpu.load(),
            active_jobs=len(self._held),
            capabilities=self.capabilities,
            interval_ms=int(self.heartbeat_interval * 1000),
            draining=self._draining,
            topics=self.topics,
            confirms=True,
            capacity=self.capacity,
            pool=self.pool,
            direct=self.direct,
        )
        hb.labels.update(self.labels)
        if self._held:
            hb.interval_ms = int(self.lease_interval * 1000)
            for h in self._held.values():
                hb.held.add(job_id=h.job_id, attempt=h.attempt)
        return hb

    async def _send_heartbeat(self) -> float:
        out = wire.new_packet("hb-" + self.worker_id, self.worker_id)
        out.heartbeat.CopyFrom(self.heartbeat())
        await self._publish(wire.heartbeat_subject(self.kind, self.worker_id), out, "heartbeat")
        return time.monotonic()


def _describe(e: BaseException) -> str:
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
