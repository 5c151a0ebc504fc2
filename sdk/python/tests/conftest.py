"""Fixtures: a real CortexOS (``cortex dev``: embedded NATS with JetStream,
the scheduler and a Go echo worker) for the session, built from this
repository with ``go build``; Python workers in this process or in
subprocesses (tests/worker_proc.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import cortexos

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

POLICY = """\
version: "pytest-1"
default: allow
rules:
  - id: forbidden-topic
    match:
      topics: ["sys.destroy"]
    decision: deny
    reason: forbidden topic
  - id: one-an-hour
    match:
      topics: ["job.py.throttled"]
    decision: throttle
    reason: one an hour
    throttle: {rate: 1, per: 1h, burst: 1, by: topic}
"""


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def async_wait_until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def topic(name: str) -> str:
    """A topic of this test alone."""
    return f"job.py.{name}.{uuid.uuid4().hex[:8]}"


@dataclass
class Dev:
    url: str
    cortex: Path
    proc: subprocess.Popen[str]
    log: Path


@pytest.fixture(scope="session")
def cortex_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cortex binary: $CORTEX_BIN, or built from this repository."""
    if os.environ.get("CORTEX_BIN"):
        return Path(os.environ["CORTEX_BIN"])
    if shutil.which("go") is None:
        pytest.fail("go is needed to build cmd/cortex for the tests (or set CORTEX_BIN)")
    out = tmp_path_factory.mktemp("bin") / "cortex"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/cortex"], cwd=REPO, check=True)
    return out


@pytest.fixture(scope="session")
def dev(cortex_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """cortex dev on a free port, with one Go echo worker (job.echo) and a
    policy that denies sys.destroy and throttles job.py.throttled."""
    d = tmp_path_factory.mktemp("dev")
    (d / "policy.yaml").write_text(POLICY)
    with run_dev(cortex_bin, d, "--workers", "1", "--work-time", "0", "--policy", str(d / "policy.yaml")) as (proc, url, log):
        yield Dev(url=url, cortex=cortex_bin, proc=proc, log=log)


@contextlib.contextmanager
def run_dev(cortex_bin: Path, d: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """Runs ``cortex dev`` in d on free ports (data in d/data, log in
    d/dev.log) with args added; yields the process, its NATS URL and the
    log once it has started; stops it with SIGINT."""
    log = d / "dev.log"
    proc = subprocess.Popen(
        [str(cortex_bin), "dev", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0", "--data-dir", str(d / "data"),
         "--log-level", "info", *args],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, cwd=d,
    )
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 60
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"NATS listening on (nats://\S+)", line):
            url = m.group(1)
        if "Ctrl-C stops everything" in line:
            break
    if not url or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"cortex dev {' '.join(args)} did not start:\n" + "".join(lines) + log.read_text())
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    try:
        yield proc, url, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest_asyncio.fixture(loop_scope="session")
async def client(dev: Dev) -> AsyncIterator[cortexos.Client]:
    c = await cortexos.Client.connect(dev.url)
    yield c
    await c.close()


@dataclass
class Workers:
    """Starts in-process workers; stops them when the test ends."""

    url: str
    running: list[tuple[cortexos.Worker, asyncio.Task[None]]] = field(default_factory=list)

    async def start(self, w: cortexos.Worker) -> cortexos.Worker:
        task = asyncio.create_task(w.run(install_signal_handlers=False))
        self.running.append((w, task))
        # Running once the scheduler has its heartbeat: it then knows the
        # worker confirms, and places by it.
        c = await cortexos.Client.connect(self.url)
        try:
            async def seen() -> bool:
                if task.done():
                    task.result()
                return any(i.heartbeat.worker_id == w.worker_id for i in await c.workers())
            await async_wait_until(seen, what=f"worker {w.worker_id} registered")
        finally:
            await c.close()
        return w

    def new(self, **kw: Any) -> cortexos.Worker:
        kw.setdefault("capacity", 4)
        return cortexos.Worker(self.url, **kw)

    async def stop_all(self) -> None:
        for w, task in self.running:
            if not task.done():
                w.stop()
        for w, task in self.running:
            try:
                await asyncio.wait_for(task, 20)
            except asyncio.TimeoutError:
                task.cancel()


@pytest_asyncio.fixture(loop_scope="session")
async def workers(dev: Dev) -> AsyncIterator[Workers]:
    ws = Workers(dev.url)
    yield ws
    await ws.stop_all()


class ProcWorker:
    """A worker in a subprocess (tests/worker_proc.py), whose stdout lines
    (READY, STARTED, RESULT, EXIT) are collected."""

    def __init__(self, url: str, topic: str, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker_proc.py"), url, topic, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        wait_until(lambda: self.has("READY") or self.proc.poll() is not None, 30, "worker process ready")
        if not self.has("READY"):
            raise AssertionError("worker process did not start:\n" + "".join(self.stderr))
        self.worker_id = self.line("READY").split()[1]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def has(self, prefix: str) -> bool:
        return any(l.startswith(prefix) for l in self.lines)

    def line(self, prefix: str) -> str:
        return next(l for l in self.lines if l.startswith(prefix))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def proc_workers(dev: Dev) -> Iterator[Callable[..., ProcWorker]]:
    started: list[ProcWorker] = []

    def start(topic: str, *args: str) -> ProcWorker:
        p = ProcWorker(dev.url, topic, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        with contextlib.suppress(Exception):
            if p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)
            p.close()
