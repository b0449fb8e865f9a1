"""A token flood for starvation tests: `python -m tests.token_flood URL TOKEN CONNECTIONS`.

Every connection posts `POST /v1/tokens` back to back until SIGTERM. It prints `flowing` once
the first token arrived, and on SIGTERM one JSON line: the number of replies per status.
A process of its own, so that its work shares neither an event loop nor a GIL with the test
that probes the service meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys

import aiohttp

from tests.service import RUN


async def flood(url: str, token: str, connections: int) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.post(url + "/v1/tokens", json=RUN, headers=headers) as reply:
                    await reply.read()
                    statuses[reply.status] += 1
            except aiohttp.ClientError:  # counted as status 0
                statuses[0] += 1
                await asyncio.sleep(0.05)
                continue
            if reply.status == 200 and statuses[200] == 1:
                print("flowing", flush=True)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(connections)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return statuses


def main() -> None:
    url, token, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
    statuses = asyncio.run(flood(url, token, connections))
    print(json.dumps({str(k): v for k, v in sorted(statuses.items())}), flush=True)


if __name__ == "__main__":
    main()
