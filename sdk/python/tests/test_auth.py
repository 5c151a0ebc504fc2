"""The SDK under the shipped NATS permissions: ``cortex dev --auth`` (the
roles of config/nats-auth.conf), a Python worker connected as the worker
user ``worker-1`` and a Python client as the administrator client, with
inputs and results large enough to go through the blob store."""

from __future__ import annotations

import asyncio
import os
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import async_wait_until, run_dev, topic

import cortexos

pytestmark = pytest.mark.asyncio(loop_scope="session")


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a dev-credentials*.env file ("export K=V K=V")."""
    env: dict[str, str] = {}
    for field in path.read_text().replace("export ", " ").split():
        k, _, v = field.partition("=")
        env[k] = v
    return env


@dataclass
class AuthDev:
    url: str
    data: Path  # where dev writes the dev-credentials*.env files


@pytest.fixture(scope="module")
def auth_dev(cortex_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthDev]:
    """cortex dev --auth on a free port, without workers of its own."""
    d = tmp_path_factory.mktemp("devauth")
    with run_dev(cortex_bin, d, "--auth", "--workers", "0", "--code-python=false") as (_, url, _):
        yield AuthDev(url=url, data=d / "data")


@pytest_asyncio.fixture(loop_scope="session")
async def auth_client(auth_dev: AuthDev) -> AsyncIterator[cortexos.Client]:
    env = read_env_file(auth_dev.data / "dev-credentials.env")
    creds = cortexos.Credentials.from_env(env)
    c = await cortexos.Client.connect(env["NATS_URL"], credentials=creds, identity=env["NATS_USER"])
    yield c
    await c.close()


async def test_blobs_under_the_shipped_permissions(auth_dev: AuthDev, auth_client: cortexos.Client) -> None:
    env = read_env_file(auth_dev.data / "dev-credentials-worker-1.env")
    assert env["NATS_USER"] == "worker-1"
    w = cortexos.Worker(auth_dev.url, credentials=cortexos.Credentials.from_env(env), worker_id="worker-1", capacity=2)
    t = topic("auth")

    @w.handler(t)
    async def reverse(job: cortexos.JobContext) -> bytes:
        return (await job.input())[::-1]

    task = asyncio.create_task(w.run(install_signal_handlers=False))

    async def registered() -> bool:
        if task.done():
            task.result()
        return any(i.heartbeat.worker_id == "worker-1" for i in await auth_client.workers())

    try:
        await async_wait_until(registered, what="worker-1 registered")
        data = os.urandom(300 << 10)  # past the 256 KiB inline limit, and the result past 2 KiB
        job = await auth_client.submit(t, input=data, wait=True, timeout=60)
        assert job.state == "COMPLETED", job.info.error
        assert job.worker_id == "worker-1"
        assert job.info.request.context_ptr.startswith("obj://CORTEX_BLOBS/inputs/"), job.info.request.context_ptr
        assert job.info.result_ptr.startswith("obj://CORTEX_BLOBS/results/"), job.info.result_ptr
        assert await auth_client.result(job.job_id) == data[::-1]
    finally:
        w.stop()
        await asyncio.wait_for(task, 20)


class GetCounter:
    """Counts a client's gets (the queries it asks on its own subject, which
    only the scheduler's user may observe on the bus)."""

    def __init__(self, c: cortexos.Client) -> None:
        self.count = 0
        get = c.get

        async def counting(job_id: str) -> cortexos.Job:
            self.count += 1
            return await get(job_id)

        c.get = counting  # type: ignore[method-assign]


async def test_watch_under_the_shipped_permissions(
    auth_dev: AuthDev, auth_client: cortexos.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the shipped permissions the administrator (sys.job.event.>) and
    tenant a's client with tenant="a" (sys.job.event.a.> only) each follow a
    job of 300 ms by its events, asking for it once or twice, with no
    permissions violation; tenant a's client without tenant may not
    subscribe to sys.job.event.*.<id>, is told so, and still ends its watch
    by asking."""
    env = read_env_file(auth_dev.data / "dev-credentials-worker-2.env")
    w = cortexos.Worker(auth_dev.url, credentials=cortexos.Credentials.from_env(env), worker_id="worker-2", capacity=2)
    t = topic("authwatch")

    @w.handler(t)
    async def slow(job: cortexos.JobContext) -> bytes:
        await asyncio.sleep(0.3)
        return b"done"

    task = asyncio.create_task(w.run(install_signal_handlers=False))
    a_env = read_env_file(auth_dev.data / "dev-credentials-tenant-a.env")
    a_creds = cortexos.Credentials.from_env(a_env)
    tenant_a = await cortexos.Client.connect(a_env["NATS_URL"], credentials=a_creds, identity="tenant-a", tenant="a")
    unbound = await cortexos.Client.connect(a_env["NATS_URL"], credentials=a_creds, identity="tenant-a")

    async def registered() -> bool:
        if task.done():
            task.result()
        return any(i.heartbeat.worker_id == "worker-2" for i in await auth_client.workers())

    async def follow(c: cortexos.Client, job_id: str) -> tuple[list[str], int]:
        gets = GetCounter(c)
        states = [j.state async for j in c.watch(job_id)]
        return states, gets.count

    try:
        await async_wait_until(registered, what="worker-2 registered")
        caplog.set_level(logging.WARNING, logger="cortexos")
        for c in (auth_client, tenant_a):
            j = await c.submit(t, ttl=60)
            states, gets = await follow(c, j.job_id)
            assert "RUNNING" in states and states[-1] == "COMPLETED", states
            assert 1 <= gets <= 2, f"{gets} gets for one watch: it polls"
        assert (await tenant_a.get(j.job_id)).info.request.tenant == "a"
        assert "permissions violation" not in caplog.text.lower(), caplog.text

        unbound.event_silence = 0.2
        j = await unbound.submit(t, ttl=60)
        states, gets = await follow(unbound, j.job_id)
        assert states[-1] == "COMPLETED" and gets >= 2, (states, gets)
        await async_wait_until(lambda: "permissions violation" in caplog.text.lower(), what="the violation reported")
        assert "sys.job.event.*." + j.job_id in caplog.text, caplog.text
    finally:
        await tenant_a.close()
        await unbound.close()
        w.stop()
        await asyncio.wait_for(task, 20)
