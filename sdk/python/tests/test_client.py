"""The client against a real scheduler: refusals, queries, the Go side."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

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


class QueryCounter:
    """Counts the queries (gets) for one job on the bus, whatever asks them:
    an observer on sys.job.query and sys.job.query.<identity>."""

    def __init__(self, nc: object, job_id: str = "") -> None:
        self.nc, self.job_id, self.count, self.subs = nc, job_id, 0, []  # type: ignore[var-annotated]

    async def __aenter__(self) -> QueryCounter:
        async def on_query(msg: object) -> None:
            p = wire.decode(msg.data)  # type: ignore[attr-defined]
            if p.WhichOneof("payload") == "job_query" and p.job_query.job_id and p.job_query.job_id == self.job_id:
                self.count += 1

        for s in ("sys.job.query", "sys.job.query.>"):
            self.subs.append(await self.nc.subscribe(s, cb=on_query))  # type: ignore[attr-defined]
        await self.nc.flush()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.flush()  # type: ignore[attr-defined]  # the last queries counted
        for s in self.subs:
            await s.unsubscribe()


def assert_in_order(states: list[str]) -> None:
    """Each state once, never back to an earlier step; terminal last."""
    steps = {"PENDING": 0, "DISPATCHED": 1, "RUNNING": 2}
    assert len(states) == len(set(states)), states
    assert [steps.get(s, 3) for s in states] == sorted(steps.get(s, 3) for s in states), states
    assert states[-1] in cortexos.TERMINAL_STATES, states


async def slow_worker(workers: Workers, t: str, seconds: float = 0.3) -> None:
    w = workers.new()

    @w.handler(t)
    async def slow(job: cortexos.JobContext) -> bytes:
        await asyncio.sleep(seconds)
        return b"done"

    await workers.start(w)


async def test_watch_follows_job_events(client: cortexos.Client, workers: Workers) -> None:
    """watch hears RUNNING and COMPLETED of a job that runs 300 ms from the
    scheduler's events: it asks for the job once. Polling every 100 ms
    would ask at least three times while the job runs."""
    t = topic("watch-events")
    await slow_worker(workers, t)
    j = await client.submit(t, ttl=60)
    states: list[str] = []
    async with QueryCounter(client.nc, j.job_id) as q:
        async for cur in client.watch(j.job_id):
            states.append(cur.state)
    assert "RUNNING" in states and states[-1] == "COMPLETED", states
    assert_in_order(states)
    assert q.count <= 2, f"{q.count} queries for one watch: it polls"
    assert q.count >= 1  # the first answer is a get's: it says the job exists


async def test_submit_wait_follows_job_events(client: cortexos.Client, workers: Workers) -> None:
    """submit(wait=True) follows the job as watch does: one query, not a poll."""
    t = topic("wait-events")
    await slow_worker(workers, t)
    job_id = f"wait-events-{t[-8:]}"
    async with QueryCounter(client.nc, job_id) as q:
        j = await client.submit(t, job_id=job_id, ttl=60, wait=True, timeout=30)
    assert j.state == "COMPLETED" and j.job_id == job_id
    assert 1 <= q.count <= 2, f"{q.count} queries for one wait: it polls"


class EventRecorder:
    """Records, with a raw subscription that announces nothing, the job
    events and the follow announcements on the bus, whoever sends them."""

    def __init__(self, nc: object) -> None:
        self.nc, self.subs = nc, []  # type: ignore[var-annotated]
        self.events: list[tuple[str, str]] = []  # (job_id, state)
        self.follows: list[str] = []  # the job ids announced

    async def __aenter__(self) -> EventRecorder:
        async def on_event(msg: object) -> None:
            p = wire.decode(msg.data)  # type: ignore[attr-defined]
            for j in p.job_answer.jobs:
                self.events.append((j.job_id, cortexos.Job(j).state))

        async def on_follow(msg: object) -> None:
            p = wire.decode(msg.data)  # type: ignore[attr-defined]
            if p.WhichOneof("payload") == "job_query":
                self.follows.append(p.job_query.job_id)

        self.subs.append(await self.nc.subscribe(wire.JOB_EVENT_PREFIX + ">", cb=on_event))  # type: ignore[attr-defined]
        self.subs.append(await self.nc.subscribe(wire.SUBJECT_JOB_FOLLOW, cb=on_follow))  # type: ignore[attr-defined]
        await self.nc.flush()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.subs:
            await s.unsubscribe()

    def states(self, job_id: str) -> list[str]:
        return [state for j, state in self.events if j == job_id]


async def test_events_only_while_followed(client: cortexos.Client, workers: Workers) -> None:
    """The scheduler publishes the events of a job someone follows only: a
    job nobody watches publishes none, while submit(wait=True), which
    announces before it submits, hears its job's. The followed job, run
    after the other ended, is the barrier: no sleep."""
    t = topic("follow-only")
    await slow_worker(workers, t, 0.05)
    async with EventRecorder(client.nc) as rec:
        quiet = await client.submit(t, ttl=60)
        await async_wait_until(lambda: _completed(client, quiet.job_id), what="the unfollowed job to complete")
        followed = await client.submit(t, ttl=60, wait=True, timeout=30)
        assert followed.state == "COMPLETED"
        await async_wait_until(lambda: "COMPLETED" in rec.states(followed.job_id), what="the followed job's COMPLETED event")
        assert rec.states(quiet.job_id) == [], rec.states(quiet.job_id)
        assert followed.job_id in rec.follows
        assert "RUNNING" in rec.states(followed.job_id), rec.states(followed.job_id)


async def _completed(client: cortexos.Client, job_id: str) -> bool:
    return (await client.get(job_id)).state == "COMPLETED"


async def test_watch_announces_again_while_it_follows(dev: Dev, workers: Workers) -> None:
    """A watch announces that it follows the job when it starts and every
    follow_interval until it ends, then no more."""
    t = topic("follow-again")
    await slow_worker(workers, t, 0.6)
    c = await cortexos.Client.connect(dev.url)
    c.follow_interval = 0.1
    try:
        async with EventRecorder(c.nc) as rec:
            j = await c.submit(t, ttl=60)
            states = [cur.state async for cur in c.watch(j.job_id)]
            assert states[-1] == "COMPLETED", states
            # The watch's end waits for its announcer: a marker sent after
            # it on the same connection arrives after every announcement.
            await c.nc.publish(wire.SUBJECT_JOB_FOLLOW, wire.encode(wire.follow_packet("test", "marker")))
            await async_wait_until(lambda: "marker" in rec.follows, what="the marker")
            n = rec.follows[: rec.follows.index("marker")].count(j.job_id)
            assert n >= 3, f"{n} announcements over a 600 ms watch every 100 ms"
            assert rec.follows.count(j.job_id) == n, "announced after the watch ended"
    finally:
        await c.close()


async def test_watch_asks_when_no_event_comes(dev: Dev, client: cortexos.Client, workers: Workers) -> None:
    """A watch that hears no event (as from a scheduler from before job
    events: here a tenant whose subject the job's events never reach) asks
    after each event_silence, not every interval, and still ends at the
    terminal state."""
    t = topic("watch-silent")
    await slow_worker(workers, t, 0.5)
    deaf = await cortexos.Client.connect(dev.url, tenant="nobody")  # the job has no tenant: events on sys.job.event._.<id>
    deaf.event_silence = 0.2
    try:
        j = await client.submit(t, ttl=60)
        states: list[str] = []
        async with QueryCounter(client.nc, j.job_id) as q:
            async for cur in deaf.watch(j.job_id, interval=0.05):
                states.append(cur.state)
        assert states[-1] == "COMPLETED", states
        assert_in_order(states)
        assert q.count >= 2, q.count
    finally:
        await deaf.close()


async def test_watch_of_unknown_job_and_event_subjects(client: cortexos.Client) -> None:
    with pytest.raises(cortexos.NotFound):
        async for _ in client.watch("no-such-job"):
            pass
    assert wire.job_event_subject("", "j1") == "sys.job.event._.j1"
    assert wire.job_event_subject("a", "x.y") == "sys.job.event.a.x.y"
    for tenant, job_id in (("a.b", "j1"), ("_", "j1"), ("a*", "j1"), ("a b", "j1"), ("a>", "j1"), ("a", ""), ("a", "x..y")):
        assert wire.job_event_subject(tenant, job_id) is None, (tenant, job_id)
    assert wire.job_events_of("j1") == "sys.job.event.*.j1"
    with pytest.raises(ValueError):
        cortexos.Client(client.nc, tenant="a.b")


async def test_submit_is_answered_not_stored(client: cortexos.Client) -> None:
    """A submission is published for an answer: the durable intake stream
    (cortex dev runs the JetStream store) does not store it, and the
    scheduler's answer says the job is kept."""
    js = client.nc.jetstream()
    before = (await js.stream_info("CORTEX_JOB_SUBMIT")).state.messages
    jobs = [await client.submit(topic("answered"), ttl=60) for _ in range(3)]
    assert all(j.state in ("PENDING", "DISPATCHED") for j in jobs), [j.state for j in jobs]
    after = (await js.stream_info("CORTEX_JOB_SUBMIT")).state.messages
    assert after == before, f"the intake stream stored {after - before} of 3 answered submissions"


async def test_submit_republishes_plainly(dev: Dev) -> None:
    """Unanswered in submit_patience, or answered "the store failed", a
    submission is published once more without the marker header, for the
    stream to keep; a late "store failed" answer to the first copy after
    that is not the answer. Here a stand-in scheduler on a subject of the
    test's own answers."""
    from cortexos.pb.v1 import job_pb2

    c = await cortexos.Client.connect(dev.url, request_timeout=10)
    c.submit_patience = 0.2
    own = f"test.submit.{uuid.uuid4().hex}"
    c._subject = lambda base: own if base == wire.SUBJECT_SUBMIT else wire.client_subject(base, c.identity)  # type: ignore[method-assign]
    seen: list[str] = []
    answer_marked = "retry"

    async def scheduler(msg: Any) -> None:
        headers = msg.headers or {}
        marked = headers.get(wire.HEADER_EXPECTED_STREAM) == wire.ANSWERED_SUBMIT_STREAM
        seen.append("marked" if marked else "plain")
        p = wire.decode(msg.data)
        reply = wire.new_packet("t", "stand-in")
        if marked and answer_marked == "none":
            return
        if marked:
            reply.job_answer.CopyFrom(job_pb2.JobAnswer(retryable=True, error=wire.SUBMIT_RETRY_ERROR))
        else:
            job = job_pb2.JobInfo(job_id=p.job_request.job_id, state=job_pb2.JOB_STATE_PENDING)
            job.request.CopyFrom(p.job_request)
            reply.job_answer.CopyFrom(job_pb2.JobAnswer(ok=True, jobs=[job]))
        await c.nc.publish(headers[wire.HEADER_REPLY_TO], wire.encode(reply))

    sub = await c.nc.subscribe(own, cb=scheduler)
    try:
        await c.nc.flush()
        j = await c.submit("job.echo")
        assert seen == ["marked", "plain"], seen
        assert j.state == "PENDING"
        seen.clear()
        answer_marked = "none"  # nobody answers the marked copy: after submit_patience, plainly
        j = await c.submit("job.echo")
        assert seen == ["marked", "plain"], seen
        assert j.state == "PENDING"
    finally:
        await sub.unsubscribe()
        await c.close()
