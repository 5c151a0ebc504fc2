"""Python workers in processes of their own: killed, paused, signalled."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import pytest
from conftest import Dev, ProcWorker, Workers, async_wait_until, topic, wait_until

import cortexos

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_killed_worker_job_completes_elsewhere(
    client: cortexos.Client, proc_workers: Callable[..., ProcWorker]
) -> None:
    """kill -9 mid-job: the lease runs out and the job is dispatched again,
    to the other worker, which completes it."""
    t = topic("kill")
    a = proc_workers(t, "--sleep", "60")
    j = await client.submit(t, max_attempts=3)
    await async_wait_until(lambda: a.has("STARTED"), what="A started the job")
    b = proc_workers(t, "--sleep", "0")
    a.signal(signal.SIGKILL)
    done = await client.wait(j.job_id, timeout=30)
    assert done.state == "COMPLETED", done.error
    assert done.worker_id == b.worker_id and done.attempt == 2
    assert await client.result(j.job_id) == b.worker_id.encode()


async def test_sigterm_drains(client: cortexos.Client, proc_workers: Callable[..., ProcWorker]) -> None:
    """SIGTERM: the held job finishes and its result is sent, then the
    process exits 0."""
    t = topic("term")
    a = proc_workers(t, "--sleep", "1", "--sync")
    j = await client.submit(t)
    await async_wait_until(lambda: a.has("STARTED"), what="job started")
    a.signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0
    assert a.has("DONE") and a.has("EXIT")
    done = await client.wait(j.job_id, timeout=30)
    assert done.state == "COMPLETED" and done.worker_id == a.worker_id and done.attempt == 1


async def test_sigterm_past_the_grace_hands_the_job_back(
    client: cortexos.Client, proc_workers: Callable[..., ProcWorker], workers: Workers
) -> None:
    """A job that does not finish within the grace is handed back (not
    counted as a failure) and runs again elsewhere."""
    t = topic("handback")
    a = proc_workers(t, "--sleep", "60", "--grace", "0.5")
    j = await client.submit(t, max_attempts=1)
    await async_wait_until(lambda: a.has("STARTED"), what="job started")
    b = workers.new()
    b.add_handler(t, lambda job: "second")
    await workers.start(b)
    a.signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0
    done = await client.wait(j.job_id, timeout=30)
    assert done.state == "COMPLETED", done.error
    assert done.worker_id == b.worker_id and done.attempt == 2 and done.failed_attempts == 0


async def test_sigint_does_not_hang_on_a_handler_that_ignores_cancellation(
    client: cortexos.Client, proc_workers: Callable[..., ProcWorker]
) -> None:
    t = topic("stubborn")
    a = proc_workers(t, "--sleep", "600", "--sync", "--ignore-cancel", "--grace", "0.3", "--stop-timeout", "0.3")
    j = await client.submit(t)
    await async_wait_until(lambda: a.has("STARTED"), what="job started")
    a.signal(signal.SIGINT)
    try:
        code = a.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker hung after SIGINT")
    assert code == 0 and a.has("EXIT") and not a.has("DONE")
    # Handed back: PENDING again, its attempt not counted as failed.
    async def handed_back() -> bool:
        job = await client.get(j.job_id)
        return job.state in ("PENDING", "DISPATCHED") and job.failed_attempts == 0

    await async_wait_until(handed_back, what="the job handed back")


async def test_second_sigint_stops_at_once(client: cortexos.Client, proc_workers: Callable[..., ProcWorker]) -> None:
    t = topic("twice")
    a = proc_workers(t, "--sleep", "600", "--grace", "600")
    await client.submit(t)
    await async_wait_until(lambda: a.has("STARTED"), what="job started")
    a.signal(signal.SIGINT)
    wait_until(lambda: any("draining" in l for l in a.stderr), what="draining")
    a.signal(signal.SIGINT)
    assert a.proc.wait(20) == 0


async def test_paused_worker_result_is_fenced(
    client: cortexos.Client, proc_workers: Callable[..., ProcWorker], workers: Workers, dev: Dev
) -> None:
    """A worker paused (SIGSTOP) past its lease loses the job to another; its
    late result for attempt 1 is fenced while attempt 2 runs, and attempt 2's
    result is the job's."""
    t = topic("paused")
    a = proc_workers(t, "--sleep", "1")
    j = await client.submit(t, max_attempts=3)
    await async_wait_until(lambda: a.has("STARTED"), what="A started")
    a.signal(signal.SIGSTOP)
    b = workers.new()
    release = asyncio.Event()

    @b.handler(t)
    async def second(job: cortexos.JobContext) -> str:
        await release.wait()
        return "B"

    await workers.start(b)

    async def on_b() -> bool:
        cur = await client.get(j.job_id)
        return cur.state == "RUNNING" and cur.attempt >= 2 and cur.worker_id == b.worker_id

    await async_wait_until(on_b, timeout=30, what="a later attempt running on B")
    a.signal(signal.SIGCONT)
    await async_wait_until(lambda: a.has("DONE"), what="A finished attempt 1")
    await async_wait_until(lambda: any("fenced a stale result" in line and f" job_id={j.job_id} " in line + " " for line in dev.log.read_text().splitlines()),
                           what="the scheduler fenced A's result")
    assert (await client.get(j.job_id)).state == "RUNNING"
    release.set()
    done = await client.wait(j.job_id, timeout=30)
    assert done.state == "COMPLETED" and done.worker_id == b.worker_id
    assert await client.result(j.job_id) == b"B"
