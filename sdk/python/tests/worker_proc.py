"""A Python worker in a process of its own, for the tests that kill, stop or
signal it. Usage: worker_proc.py URL TOPIC [--sleep S] [--sync] [--ignore-cancel]
[--grace S] [--stop-timeout S]. Prints READY <worker_id>, STARTED <job_id>
<attempt>, DONE <job_id> <attempt> and EXIT, one per line."""

import argparse
import asyncio
import logging
import sys
import time

import cortexos


def say(*words: object) -> None:
    print(*words, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("topic")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--sync", action="store_true")
    ap.add_argument("--ignore-cancel", action="store_true")
    ap.add_argument("--grace", type=float, default=10.0)
    ap.add_argument("--stop-timeout", type=float, default=2.0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    w = cortexos.Worker(a.url, capacity=2, shutdown_grace=a.grace, stop_timeout=a.stop_timeout)

    if a.sync:
        def handler(job: cortexos.JobContext) -> str:
            say("STARTED", job.job_id, job.attempt)
            end = time.monotonic() + a.sleep
            while time.monotonic() < end:
                if job.cancelled and not a.ignore_cancel:
                    raise cortexos.Cancelled(job.cancel_reason or "")
                time.sleep(0.01)
            say("DONE", job.job_id, job.attempt)
            return w.worker_id
        w.add_handler(a.topic, handler)
    else:
        async def ahandler(job: cortexos.JobContext) -> str:
            say("STARTED", job.job_id, job.attempt)
            await asyncio.sleep(a.sleep)
            say("DONE", job.job_id, job.attempt)
            return w.worker_id
        w.add_handler(a.topic, ahandler)

    async def run() -> None:
        task = asyncio.create_task(w.run())
        while not w.ready:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        say("READY", w.worker_id)
        await task

    asyncio.run(run())
    say("EXIT")


if __name__ == "__main__":
    main()
