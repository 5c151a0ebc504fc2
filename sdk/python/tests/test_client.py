"""The client against a real scheduler: refusals, queries, the Go side."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from conftest import Dev, Workers, async_wait_until, topic

import cortexos
from cortexos import wire
from cortexos.pb.v1 import job_pb2
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
    reads the answer under _INBOX.alice. (A scheduler that serves client
    identities answers there; this test answers as one.)"""
    responder = await cortexos.Client.connect(dev.url)
    seen: dict[str, str] = {}

    async def on_submit(msg: object) -> None:
        m = msg  # nats Msg
        p = wire.decode(m.data)  # type: ignore[attr-defined]
        seen["subject"], seen["reply_to"] = m.subject, m.headers[wire.HEADER_REPLY_TO]  # type: ignore[attr-defined]
        out = wire.new_packet(p.trace_id, "fake-scheduler")
        out.job_answer.ok = True
        out.job_answer.jobs.add().CopyFrom(job_pb2.JobInfo(job_id=p.job_request.job_id, state=job_pb2.JOB_STATE_PENDING))
        await responder.nc.publish(seen["reply_to"], wire.encode(out))

    async def on_query(msg: object) -> None:
        m = msg
        out = wire.new_packet("t", "fake-scheduler")
        out.job_answer.ok = True
        out.job_answer.jobs.add().CopyFrom(job_pb2.JobInfo(job_id="j", state=job_pb2.JOB_STATE_RUNNING))
        seen["query"] = m.subject  # type: ignore[attr-defined]
        await responder.nc.publish(m.reply, wire.encode(out))  # type: ignore[attr-defined]

    await responder.nc.subscribe("sys.job.submit.alice", cb=on_submit)
    await responder.nc.subscribe("sys.job.query.alice", cb=on_query)
    await responder.nc.flush()
    alice = await cortexos.Client.connect(dev.url, identity="alice")
    try:
        j = await alice.submit("job.py.identity")
        assert j.state == "PENDING"
        assert seen["subject"] == "sys.job.submit.alice" and seen["reply_to"].startswith("_INBOX.alice.")
        assert (await alice.get("j")).state == "RUNNING" and seen["query"] == "sys.job.query.alice"
    finally:
        await alice.close()
        await responder.close()
    with pytest.raises(ValueError):
        cortexos.Client(responder.nc, identity="a.b")
