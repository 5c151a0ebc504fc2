"""The quick start of sdk/python/README.md and the examples, run as a user
would: each program in a process of its own, against the session's
``cortex dev``, with only its URL changed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import Dev, async_wait_until

import cortexos

pytestmark = pytest.mark.asyncio(loop_scope="session")

SDK = Path(__file__).resolve().parents[1]
README_URL = "nats://127.0.0.1:4222"


def python_blocks(md: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", md, re.S)


class Program:
    """A Python program in a subprocess, its output collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, cwd=SDK,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()

    @staticmethod
    def _read(f: object, into: list[str]) -> None:
        for line in f:  # type: ignore[attr-defined]
            into.append(line)

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.proc.args!r} did not end within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return "stdout:\n" + "".join(self.out) + "stderr:\n" + "".join(self.err)


async def upper_workers(client: cortexos.Client) -> set[str]:
    return {i.heartbeat.worker_id for i in await client.workers() if "job.upper" in i.heartbeat.topics}


async def start_worker(client: cortexos.Client, args: list[str], env: dict[str, str] | None = None) -> Program:
    """Starts a worker program for job.upper and waits until the scheduler
    has its heartbeat (a worker of an earlier test may still be listed)."""
    before = await upper_workers(client)
    w = Program(args, env)

    async def registered() -> bool:
        if w.proc.poll() is not None:
            pytest.fail(f"the worker exited {w.proc.returncode}:\n{w.output()}")
        return bool(await upper_workers(client) - before)

    await async_wait_until(registered, timeout=30, what="the worker registered")
    return w


def stop_worker(w: Program) -> None:
    """Ctrl-C, as the README says: it drains and exits 0."""
    w.proc.send_signal(signal.SIGINT)
    assert w.finish(20) == 0, w.output()


async def test_readme_quick_start(dev: Dev, client: cortexos.Client) -> None:
    blocks = python_blocks((SDK / "README.md").read_text())
    assert len(blocks) == 2, "the README's quick start is a worker and a client"
    worker_src, client_src = (b.replace(README_URL, dev.url) for b in blocks)
    assert dev.url in worker_src and dev.url in client_src, "the quick start names its NATS URL"

    w = await start_worker(client, ["-c", worker_src])
    try:
        c = Program(["-c", client_src])
        assert c.finish(60) == 0, c.output()
        out = "".join(c.out)
        assert "COMPLETED b'HELLO'" in out, c.output()  # as the README's comment says
        assert "denied by rule forbidden-topic" in out, c.output()
    finally:
        stop_worker(w)


async def test_examples(dev: Dev, client: cortexos.Client) -> None:
    env = {"NATS_URL": dev.url}
    w = await start_worker(client, ["examples/upper_worker.py"], env)
    try:
        c = Program(["examples/submit.py", "job.upper", "hello"], env)
        assert c.finish(60) == 0, c.output()
        assert c.out and c.out[-1].strip() == "HELLO", c.output()
    finally:
        stop_worker(w)
