"""A worker for job.upper: uppercases its input.

    NATS_URL=nats://127.0.0.1:4222 python examples/upper_worker.py

Credentials come from NATS_USER/NATS_PASSWORD and the other NATS_*
variables, as for the Go binaries. Ctrl-C (or SIGTERM) drains: held jobs
finish, then it exits; a second Ctrl-C hands them back at once.
"""

import asyncio
import logging
import os

import cortexos


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    worker = cortexos.Worker(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        credentials=cortexos.Credentials.from_env(),
        capacity=4,
    )

    @worker.handler("job.upper")
    async def upper(job: cortexos.JobContext) -> bytes:
        return (await job.input()).upper()

    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
