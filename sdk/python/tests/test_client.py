"""The client against a real scheduler: refusals, queries, the Go side."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from conftest import Dev, Workers, async_wait_until, topic

import cortexos
from cortexos import wire
from cortexos.pointers import parse_data_url

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_denied_carries_the_rule(client: cortexos.Client) -> None:
    with pytest.raises(cortexos.Denied) as e:
        await client.submit("sys.destroy")
    assert e.value.rule_id == "forbidden-topic" and e.value.job is not None and e.value.job.state == "DENIED"


async def test_throttled_carries_retry_after(client: cortexos.Client) -> None:
    await client.submit("job.py.throttled")  # the bucket's one token
    with pytest.raises(cortexos.Throttled) as e:
        await client.submit("job.py.throttled")
    assert e.value.retryable and e.value.retry_after > 60 and e.value.rule_id == "one-an-hour"


async def test_conflict_and_not_found(client: cortexos.Client) -> None:
    t = topic("conflict")
    j = await client.submit(t, job_id=f"conflict-{t[-8:]}", input=b"one")
    again = await client.submit(t, job_id=j.job_id, input=b"one")  # the same job: harmless
    assert again.job_id == j.job_id
    with pytest.raises(cortexos.Conflict):
        await client.submit(t, job_id=j.job_id, input=b"two")
    with pytest.raises(cortexos.NotFound):
        await client.get("no-such-job")
    with pytest.raises(cortexos.NotFound):
        await client.cancel("no-such-job")
    with pytest.raises(cortexos.Refused):
        await client.submit("not-a-job-topic")


async def test_list_watch_and_cancel_pending(client: cortexos.Client) -> None:
    t = topic("nobody")  # no worker serves it: it waits
    j = await client.submit(t, ttl=60)
    listed = await client.list(limit=1000)
    assert j.job_id in {x.job_id for x in listed}
    states: list[str] = []

    async def follow() -> None:
        async for cur in client.watch(j.job_id, interval=0.05):
            states.append(cur.state)

    watching = asyncio.create_task(follow())
    await async_wait_until(lambda: states, what="the first state")
    await client.cancel(j.job_id, reason="not needed")
    await asyncio.wait_for(watching, 20)
    assert states[-1] == "CANCELLED" and states[0] in ("PENDING", "DISPATCHED")
    pending = await client.list(state="cancelled", limit=1000)
    assert j.job_id in {x.job_id for x in pending}
    with pytest.raises(TimeoutError):
        await client.wait((await client.submit(t)).job_id, timeout=0.3)


async def test_python_client_to_go_echo_worker(client: cortexos.Client) -> None:
    j = await client.submit("job.echo", input=b"hi", wait=True, timeout=30)
    assert j.state == "COMPLETED" and j.result_ptr == "memory://echo/" + j.job_id
    assert j.worker_id.startswith("worker-echo-")


async def test_go_cli_to_python_worker(dev: Dev, workers: Workers) -> None:
    t = topic("cli")
    w = workers.new()

    @w.handler(t)
    async def upper(job: cortexos.JobContext) -> bytes:
        return (await job.input()).upper()

    await workers.start(w)
    out = await asyncio.to_thread(
        subprocess.run,
        [str(dev.cortex), "submit", "--nats-url", dev.url, "--topic", t, "--payload", "hello", "--wait", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["state"] == "COMPLETED" and job["worker_id"] == w.worker_id
    assert parse_data_url(job["result_ptr"])[0] == b"HELLO"


async def test_identity_uses_its_own_subjects(dev: Dev) -> None:
    """With identity=alice the client submits on sys.job.submit.alice and
    queries on sys.job.query.alice, reading the answers under _INBOX.alice.;
    the scheduler (which serves client identities) answers there. An
    observer sees the subjects without answering."""
    observer = await cortexos.Client.connect(dev.url)
    seen: dict[str, str] = {}

    async def on_submit(msg: object) -> None:
        m = msg  # nats Msg
        seen["subject"], seen["reply_to"] = m.subject, m.headers[wire.HEADER_REPLY_TO]  # type: ignore[attr-defined]

    async def on_query(msg: object) -> None:
        seen["query"], seen["query_reply"] = msg.subject, msg.reply  # type: ignore[attr-defined]

    await observer.nc.subscribe("sys.job.submit.alice", cb=on_submit)
    await observer.nc.subscribe("sys.job.query.alice", cb=on_query)
    await observer.nc.flush()
    alice = await cortexos.Client.connect(dev.url, identity="alice")
    try:
        j = await alice.submit("job.py.identity")
        assert j.state in ("PENDING", "DISPATCHED")
        await async_wait_until(lambda: "subject" in seen, what="the submission seen")
        assert seen["subject"] == "sys.job.submit.alice" and seen["reply_to"].startswith("_INBOX.alice.")
        assert (await alice.get(j.job_id)).job_id == j.job_id
        await async_wait_until(lambda: "query" in seen, what="the query seen")
        assert seen["query"] == "sys.job.query.alice" and seen["query_reply"].startswith("_INBOX.alice.")
    finally:
        await alice.close()
        await observer.close()
    with pytest.raises(ValueError):
        cortexos.Client(observer.nc, identity="a.b")
