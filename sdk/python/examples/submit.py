"""Submit a job and print its result.

    python examples/submit.py job.upper hello
"""

import asyncio
import os
import sys

import cortexos


async def main(topic: str, data: str) -> None:
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    async with await cortexos.Client.connect(url, credentials=cortexos.Credentials.from_env()) as client:
        try:
            job = await client.submit(topic, input=data, wait=True, timeout=60)
        except cortexos.Throttled as e:
            sys.exit(f"throttled, retry after {e.retry_after:g}s")
        except cortexos.Refused as e:
            sys.exit(f"refused: {e}")
        print(job)
        if job.state == "COMPLETED":
            try:
                print((await client.result(job.job_id)).decode(errors="replace"))
            except cortexos.PointerError:
                print("result at", job.result_ptr)
        else:
            sys.exit(job.error)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "job.upper", sys.argv[2] if len(sys.argv) > 2 else "hello"))
