"""Run Python source in the sandboxed job.code.python worker (cortex dev runs
one when bubblewrap works on the machine; docs/code-python.md).

    python examples/run_code.py 'import sys; print(sys.version)'
"""

import asyncio
import json
import os
import sys

import cortexos


async def main(source: str) -> None:
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    async with await cortexos.Client.connect(url, credentials=cortexos.Credentials.from_env()) as client:
        # One attempt: a program that fails would fail again. 10 s of wall time.
        job = await client.submit("job.code.python", input=source, max_attempts=1, job_timeout=10, wait=True, timeout=60)
        if job.state != "COMPLETED":
            sys.exit(f"{job.state}: {job.error}")
        out = json.loads(await client.result(job.job_id))
        sys.stdout.write(out["stdout"])
        sys.stderr.write(out["stderr"])
        print(f"[exit {out['exit_code']} in {out['duration_ms']} ms{', truncated' if out['truncated'] else ''}]")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "print(6 * 7)"))
