"""A real TCP proxy between a gRPC client and server that loses answers on request.

Armed, it forwards everything until the server's answer to a call starts arriving (the
first HTTP/2 HEADERS frame on a stream, which the server sends only after the handler has
returned, so after what the call committed), then drops both connections without passing
that frame on. The client sees the connection reset (UNAVAILABLE) and never the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["DroppingProxy", "dropping_proxy"]

_FRAME_HEADER = 9
_HEADERS = 0x1


class DroppingProxy:
    """Listens on 127.0.0.1:`port`, forwards to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._to_drop = 0
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Answers lost so far.
        self.dropped = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drop_next_answers(self, count: int = 1) -> None:
        """Lose the next `count` answers, each with the connection that carried it."""
        self._to_drop = count

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        writers = (client_out, server_out)
        self._writers.update(writers)
        for pump in (
            self._forward(client_in, server_out),
            self._answers(server_in, client_out, writers),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        sink.transport.abort()

    async def _answers(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        writers: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        """Server to client, frame by frame (the server sends no preface but SETTINGS)."""
        buffered = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                buffered += chunk
                while len(buffered) >= _FRAME_HEADER:
                    length = int.from_bytes(buffered[:3], "big")
                    if len(buffered) < _FRAME_HEADER + length:
                        break
                    kind = buffered[3]
                    stream = int.from_bytes(buffered[5:9], "big") & 0x7FFFFFFF
                    if self._to_drop and kind == _HEADERS and stream != 0:
                        self._to_drop -= 1
                        self.dropped += 1
                        for writer in writers:
                            writer.transport.abort()
                        return
                    sink.write(buffered[: _FRAME_HEADER + length])
                    buffered = buffered[_FRAME_HEADER + length :]
                await sink.drain()
        sink.transport.abort()


@contextlib.asynccontextmanager
async def dropping_proxy(upstream_port: int) -> AsyncIterator[DroppingProxy]:
    """A started DroppingProxy to `upstream_port`, closed on exit."""
    proxy = DroppingProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()
