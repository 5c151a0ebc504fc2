"""CortexOS Python SDK: submit jobs to CortexOS and run workers for it.

    import cortexos

    worker = cortexos.Worker(nats_url="nats://127.0.0.1:4222", capacity=4)

    @worker.handler("job.upper")
    async def upper(job: cortexos.JobContext) -> bytes:
        return (await job.input()).upper()

    await worker.run()

    client = await cortexos.Client.connect("nats://127.0.0.1:4222")
    job = await client.submit("job.upper", input=b"hello", wait=True, timeout=30)
    print(await client.result(job.job_id))   # b"HELLO"

The wire protocol is the Go runtime's (pkg/worker, pkg/client):
docs/sdk-python.md describes it and what this package does of it.
"""

from cortexos.client import TERMINAL_STATES, Client, Job
from cortexos.connection import Credentials
from cortexos.errors import (
    ConfigError,
    Conflict,
    CortexError,
    Denied,
    JobFailed,
    NoScheduler,
    NotFound,
    PointerError,
    Refused,
    Throttled,
)
from cortexos.pointers import BlobStore, Pointer
from cortexos.worker import Cancelled, HandlerResult, JobContext, Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Job",
    "TERMINAL_STATES",
    "Worker",
    "JobContext",
    "WorkerStats",
    "HandlerResult",
    "Cancelled",
    "Credentials",
    "Pointer",
    "BlobStore",
    "CortexError",
    "ConfigError",
    "Refused",
    "Denied",
    "Throttled",
    "Conflict",
    "NotFound",
    "NoScheduler",
    "JobFailed",
    "PointerError",
]
