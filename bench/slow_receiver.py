"""A webhook endpoint that takes its time: answers every POST 204 after --delay seconds
(5 by default). What `--webhooks` points a server at, to show that a slow or dead endpoint
does not move Login or Refresh: nothing on an RPC's path waits on HTTP.

Run: python -m bench.slow_receiver [--delay 5]; prints its port like the servers, and on
SIGTERM how many requests it received.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

__all__ = ["received_requests"]

_RECEIVED = "bench webhook receiver: received "


def received_requests(log: str) -> int | None:
    """The request count the receiver's log ends with, once it has stopped."""
    for line in reversed(log.splitlines()):
        if line.startswith(_RECEIVED):
            return int(line[len(_RECEIVED) :].split()[0])
    return None


async def _serve(delay: float) -> None:
    received = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        await request.read()
        await asyncio.sleep(delay)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    # The line bench/servers.py's spawn reads the port from.
    print(
        f"bench webhook receiver: serving gRPC on 127.0.0.1:{site.port} (HTTP, in fact)",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(f"{_RECEIVED}{received} requests", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.slow_receiver")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds before each answer")
    asyncio.run(_serve(parser.parse_args().delay))
