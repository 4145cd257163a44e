"""The gRPC bound: a grpc.aio server whose one method does nothing.

Same server setup as authsvc's (grpc.aio, the same channel options, plaintext on
127.0.0.1), no interceptor, no protobuf: /bench.Empty/Call takes and returns raw
bytes and answers b"". Whatever it serves per second is the most any unary RPC of
authsvc could serve on this machine. Run: python -m bench.empty_server [port
[reuseport]]; with `reuseport`, several of them share the port like authsvc's
workers.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

__all__ = ["METHOD"]

METHOD = "/bench.Empty/Call"


async def _call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


async def _serve(port: int, reuseport: bool) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 65536),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", int(reuseport)),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Call": grpc.unary_unary_rpc_method_handler(_call)}
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"bench empty server: serving gRPC on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(
        _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0, sys.argv[2:3] == ["reuseport"])
    )
