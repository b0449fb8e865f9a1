"""The fake otfd (tests/fakes/otfd.py) as a process of its own for `make bench`: OTF's runner
endpoint costs keysvc two lookups in otfd per token, answered here on loopback. It makes one
running job and writes `{"job_id", "token"}` (the job token) to --job-file, mode 0600."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web

from keysvc.secrets import write_private_file
from tests.fakes.otfd import FakeOtfd


async def serve(fake: FakeOtfd, port: int) -> None:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--job-file", type=Path, required=True)
    args = parser.parse_args()
    fake = FakeOtfd(record=False)
    job, token = fake.running_job("acme", "networking", "plan")
    write_private_file(args.job_file, json.dumps({"job_id": job.id, "token": token}).encode())
    try:
        import uvloop

        uvloop.run(serve(fake, args.port))
    except ImportError:
        asyncio.run(serve(fake, args.port))


if __name__ == "__main__":
    main()
