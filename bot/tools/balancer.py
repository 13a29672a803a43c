"""`bot balance`: one public port in front of several gateway processes, for the
production shape run from local processes (`bot run-prod`); a real deployment puts its
own load balancer there.

A TCP proxy: each connection goes to the next gateway in turn, and to the one after
when a gateway refuses connections, so a stopped gateway costs no request. Web chat
connections (`/socket.io/`) from one client address always go to the same gateway,
because an Engine.IO polling session lives in one process."""
from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from typing import List, Sequence, Tuple

log = logging.getLogger("bot.tools.balancer")

Backend = Tuple[str, int]
REQUEST_LINE_LIMIT = 16 * 1024
REQUEST_LINE_SECONDS = 10.0
CHUNK = 64 * 1024


def parse_backend(text: str) -> Backend:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a backend is host:port, not {text!r}")
    return host, int(port)


class Balancer:
    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self.backends = list(backends)
        self._turn = itertools.count()

    def order(self, request_line: bytes, client_host: str) -> List[Backend]:
        """The backends to try, first choice first."""
        if b" /socket.io/" in request_line:
            start = zlib.crc32(client_host.encode()) % len(self.backends)
        else:
            start = next(self._turn) % len(self.backends)
        return self.backends[start:] + self.backends[:start]

    async def handle(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(client_reader.readline(),
                                                  REQUEST_LINE_SECONDS)
            if request_line:
                peer = client_writer.get_extra_info("peername") or ("", 0)
                await self._forward(request_line, str(peer[0]), client_reader, client_writer)
        except (asyncio.TimeoutError, ValueError, OSError):
            pass  # a silent, oversized or broken client: nothing to forward
        finally:
            client_writer.close()

    async def _forward(self, request_line: bytes, client_host: str,
                       client_reader: asyncio.StreamReader,
                       client_writer: asyncio.StreamWriter) -> None:
        for host, port in self.order(request_line, client_host):
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
            except OSError:
                continue
            upstream_writer.write(request_line)
            try:
                await asyncio.gather(_pipe(client_reader, upstream_writer),
                                     _pipe(upstream_reader, client_writer))
            finally:
                upstream_writer.close()
            return
        log.error("no gateway accepts connections: %s", self.backends)
        client_writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n")
        await client_writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the sender closes, then pass the half-close on."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def serve(host: str, port: int, backends: Sequence[Backend]) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.handle, host, port, limit=REQUEST_LINE_LIMIT)
    log.info("balancing %s:%d over %s", host, port,
             ", ".join(f"{h}:{p}" for h, p in backends))
    async with server:
        await server.serve_forever()
