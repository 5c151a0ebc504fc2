"""Python workers in this process against a real scheduler (cortex dev)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from conftest import Dev, Workers, async_wait_until, topic

import cortexos
from cortexos import wire
from cortexos.pb.v1 import job_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_round_trip(client: cortexos.Client, workers: Workers) -> None:
    t = topic("upper")
    w = workers.new(labels={"zone": "a"})

    @w.handler(t)
    async def upper(job: cortexos.JobContext) -> bytes:
        assert job.attempt == 1 and job.env == {"K": "v"} and job.deadline is not None
        return (await job.input()).upper()

    await workers.start(w)
    job = await client.submit(t, input=b"hello", env={"K": "v"}, wait=True, timeout=30)
    assert job.state == "COMPLETED", job.error
    assert job.worker_id == w.worker_id and job.attempt == 1
    assert job.result_ptr.startswith("data:")
    assert await client.result(job.job_id) == b"HELLO"
    assert w.stats.completed == 1 and w.stats.active == 0


async def test_results_of_every_kind(client: cortexos.Client, workers: Workers) -> None:
    """str and bytes inline, a large result through the object store, a
    Pointer passed through, None for no result; a large input through the
    object store."""
    t = topic("kinds")
    w = workers.new(result_inline_limit=1024)

    @w.handler(t)
    async def kinds(job: cortexos.JobContext) -> cortexos.HandlerResult:
        data = await job.input()
        kind = job.env["kind"]
        if kind == "str":
            return data.decode() + "!"
        if kind == "big":
            return data * 2
        if kind == "ptr":
            return cortexos.Pointer("memory://python/" + job.job_id)
        return None

    await workers.start(w)
    j = await client.submit(t, input="héllo", env={"kind": "str"}, wait=True, timeout=30)
    assert (await client.result(j.job_id)).decode() == "héllo!"

    big = bytes(range(256)) * 2048  # 512 KiB: past the client's inline limit too
    j = await client.submit(t, input=big, env={"kind": "big"}, wait=True, timeout=60)
    assert j.state == "COMPLETED", j.error
    assert j.info.request.context_ptr.startswith("obj://CORTEX_BLOBS/inputs/")
    assert re.fullmatch(rf"obj://CORTEX_BLOBS/results/{j.job_id}/1/[0-9a-f]{{32}}", j.result_ptr), j.result_ptr
    assert await client.result(j.job_id) == big * 2

    j = await client.submit(t, env={"kind": "ptr"}, wait=True, timeout=30)
    assert j.result_ptr == "memory://python/" + j.job_id
    with pytest.raises(cortexos.PointerError):
        await client.result(j.job_id)

    j = await client.submit(t, env={"kind": "none"}, wait=True, timeout=30)
    assert j.state == "COMPLETED" and j.result_ptr == ""
    assert await client.result(j.job_id) == b""


async def test_failure_retries_with_the_next_attempt(client: cortexos.Client, workers: Workers) -> None:
    t = topic("flaky")
    w = workers.new()
    seen: list[int] = []

    @w.handler(t)
    def flaky(job: cortexos.JobContext) -> str:  # a synchronous handler
        seen.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    await workers.start(w)
    j = await client.submit(t, max_attempts=3, wait=True, timeout=30)
    assert j.state == "COMPLETED" and j.attempt == 2 and j.failed_attempts == 1
    assert seen == [1, 2]

    j = await client.submit(t + ".none", max_attempts=1)  # nobody serves it: stays PENDING
    assert j.state in ("PENDING", "DISPATCHED")


async def test_failed_job_carries_the_error(client: cortexos.Client, workers: Workers) -> None:
    t = topic("fail")
    w = workers.new()

    @w.handler(t)
    async def fail(job: cortexos.JobContext) -> bytes:
        raise ValueError("bad input")

    await workers.start(w)
    j = await client.submit(t, max_attempts=1, wait=True, timeout=30)
    assert j.state == "FAILED" and "ValueError: bad input" in j.error and j.dead_letter
    with pytest.raises(cortexos.JobFailed) as e:
        await client.result(j.job_id)
    assert e.value.job.state == "FAILED"


async def test_timeout_cancels_the_handler(client: cortexos.Client, workers: Workers) -> None:
    t = topic("slow")
    w = workers.new()
    cancelled = asyncio.Event()

    @w.handler(t)
    async def slow(job: cortexos.JobContext) -> bytes:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    await workers.start(w)
    j = await client.submit(t, job_timeout=0.3, max_attempts=1, wait=True, timeout=30)
    assert j.state == "TIMEOUT" and "timed out" in j.error
    assert cancelled.is_set() and w.stats.timed_out == 1


async def test_cancel_reaches_an_async_handler(client: cortexos.Client, workers: Workers) -> None:
    t = topic("cancel-async")
    w = workers.new()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @w.handler(t)
    async def wait_forever(job: cortexos.JobContext) -> bytes:
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            assert job.cancelled and job.cancel_reason == "job cancelled"
            cancelled.set()
            raise
        return b""

    await workers.start(w)
    j = await client.submit(t)
    await asyncio.wait_for(started.wait(), 20)
    await async_wait_until(lambda: client.get(j.job_id), what="job known")
    c = await client.cancel(j.job_id, reason="test")
    assert c.state == "CANCELLED"
    await asyncio.wait_for(cancelled.wait(), 20)
    await async_wait_until(lambda: w.stats.cancelled == 1 and w.stats.active == 0, what="cancelled result sent")
    with pytest.raises(cortexos.Conflict):
        await client.cancel(j.job_id)


async def test_cancel_reaches_a_sync_handler(client: cortexos.Client, workers: Workers) -> None:
    t = topic("cancel-sync")
    w = workers.new()
    started, cancelled = threading.Event(), threading.Event()

    @w.handler(t)
    def wait_forever(job: cortexos.JobContext) -> bytes:
        started.set()
        if job.cancel_event.wait(120):
            cancelled.set()
            job.raise_if_cancelled()
        return b""

    await workers.start(w)
    j = await client.submit(t)
    await async_wait_until(started.is_set, what="handler started")
    await client.cancel(j.job_id)
    await async_wait_until(cancelled.is_set, what="sync handler saw the cancel")
    await async_wait_until(lambda: w.stats.cancelled == 1 and w.stats.active == 0, what="cancelled result sent")
    assert (await client.get(j.job_id)).state == "CANCELLED"


async def test_blocking_sync_handler_keeps_its_lease(client: cortexos.Client, workers: Workers) -> None:
    """A synchronous handler that sleeps past the lease (3 x 500 ms) runs on
    a thread: heartbeats go on, the lease holds, the attempt is not lost."""
    t = topic("sleepy")
    w = workers.new()

    @w.handler(t)
    def sleepy(job: cortexos.JobContext) -> str:
        time.sleep(3)
        return "rested"

    await workers.start(w)
    j = await client.submit(t, max_attempts=1, wait=True, timeout=30)
    assert j.state == "COMPLETED", j.error
    assert j.attempt == 1 and j.failed_attempts == 0
    assert await client.result(j.job_id) == b"rested"


async def test_capacity_is_respected(client: cortexos.Client, workers: Workers) -> None:
    t = topic("cap")
    w = workers.new(capacity=1)
    running = 0
    most = 0

    @w.handler(t)
    async def one(job: cortexos.JobContext) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1
        return b"x"

    await workers.start(w)
    jobs = await asyncio.gather(*(client.submit(t) for _ in range(4)))
    done = await asyncio.gather(*(client.wait(j.job_id, timeout=60) for j in jobs))
    assert all(j.state == "COMPLETED" for j in done), [j.error for j in done]
    assert most == 1


async def test_heartbeat_reports_the_worker(client: cortexos.Client, workers: Workers) -> None:
    t = topic("hb")
    w = workers.new(capacity=3, capabilities=["python", "gpu"], labels={"gpu": "h100"}, pool="")
    w.add_handler(t, lambda job: None)
    await workers.start(w)
    info = next(i for i in await client.workers() if i.heartbeat.worker_id == w.worker_id)
    hb = info.heartbeat
    assert hb.capacity == 3 and list(hb.capabilities) == ["python", "gpu"] and dict(hb.labels) == {"gpu": "h100"}
    assert list(hb.topics) == [t] and hb.confirms and hb.direct and not hb.draining
    assert hb.interval_ms == 5000


async def test_job_it_cannot_run_is_handed_back(client: cortexos.Client, workers: Workers) -> None:
    """Two workers share a topic's queue group; jobs that require a label only
    one has all complete there: the other refuses the ones it is given."""
    t = topic("labels")
    plain, gpu = workers.new(), workers.new(labels={"gpu": "h100"})
    for w in (plain, gpu):
        w.add_handler(t, lambda job: job.worker_id)
    await workers.start(plain)
    await workers.start(gpu)
    jobs = await asyncio.gather(*(client.submit(t, labels={"gpu": "h100"}) for _ in range(8)))
    done = await asyncio.gather(*(client.wait(j.job_id, timeout=60) for j in jobs))
    assert {j.worker_id for j in done} == {gpu.worker_id}
    assert plain.stats.completed == 0 and plain.stats.refused == plain.stats.received


async def test_malformed_packets_are_counted_not_fatal(client: cortexos.Client, workers: Workers) -> None:
    t = topic("garbage")
    w = workers.new(max_packet_bytes=4096)
    w.add_handler(t, lambda job: "fine")
    await workers.start(w)
    nc = client.nc
    await nc.publish(t, b"\xff\xff\xff not protobuf")
    await nc.publish(wire.worker_job_subject(w.worker_id), b"\x0a\x02\xc3\x28")  # trace_id not UTF-8
    await nc.publish(t, b"")  # no payload
    await nc.publish(t, b"\x0a\x01a" * 2000)  # over the cap
    await nc.publish(wire.worker_cancel_subject(w.worker_id), b"\x08")  # truncated
    await async_wait_until(
        lambda: (w.stats.malformed, w.stats.unknown_payload, w.stats.too_large) == (3, 1, 1),
        what="packets counted",
    )
    j = await client.submit(t, wait=True, timeout=30)
    assert await client.result(j.job_id) == b"fine"


async def test_drain_refuses_new_jobs_and_finishes_held_ones(client: cortexos.Client, workers: Workers) -> None:
    t = topic("drain")
    w = workers.new()
    started = asyncio.Event()

    @w.handler(t)
    async def slow(job: cortexos.JobContext) -> str:
        started.set()
        await asyncio.sleep(0.5)
        return "finished"

    await workers.start(w)
    j = await client.submit(t)
    await asyncio.wait_for(started.wait(), 20)
    w.stop()
    task = workers.running[-1][1]
    await asyncio.wait_for(task, 20)
    assert (await client.wait(j.job_id, timeout=30)).state == "COMPLETED"
    assert await client.result(j.job_id) == b"finished"


async def test_stale_attempt_result_is_fenced(client: cortexos.Client, workers: Workers, dev: Dev) -> None:
    """A result for an attempt that is no longer current changes nothing.
    (test_process.py has the same with a worker paused past its lease.)"""
    t = topic("fence")
    w = workers.new()
    release = asyncio.Event()

    @w.handler(t)
    async def held(job: cortexos.JobContext) -> str:
        await release.wait()
        return "current"

    await workers.start(w)
    j = await client.submit(t)
    await async_wait_until(lambda: _state(client, j.job_id, "RUNNING"), what="running")
    # A result for attempt 7, which was never dispatched, from a worker id
    # that is not the one holding the job.
    p = wire.new_packet("t", "impostor")
    p.job_result.CopyFrom(job_pb2.JobResult(job_id=j.job_id, status=job_pb2.JOB_STATUS_COMPLETED,
                                            result_ptr="data:,stale", worker_id="impostor", attempt=7))
    await client.nc.publish(wire.result_subject("impostor"), wire.encode(p))
    await async_wait_until(lambda: any("fenced a stale result" in line and f" job_id={j.job_id} " in line + " " for line in dev.log.read_text().splitlines()),
                           what="the scheduler fenced the result")
    cur = await client.get(j.job_id)
    assert cur.state == "RUNNING" and cur.attempt == 1
    release.set()
    done = await client.wait(j.job_id, timeout=30)
    assert done.state == "COMPLETED" and await client.result(j.job_id) == b"current"


async def _state(client: cortexos.Client, job_id: str, state: str) -> bool:
    return (await client.get(job_id)).state == state
