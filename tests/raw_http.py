"""A bare HTTP/1.1 POST over loopback, for requests no HTTP client library will build:
header values with raw non-ASCII bytes, odd Content-Types, bodies that are not what they
claim. One connection per request (Connection: close), so nothing carries over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiohttp.test_utils import TestClient

Headers = Sequence[tuple[bytes, bytes]]


async def raw_post(
    client: TestClient, target: str | bytes, headers: Headers, body: bytes
) -> int:
    """POST ``body`` to ``target`` (a path, and maybe a query, sent byte for byte) with
    exactly ``headers`` (plus Host, Content-Length and Connection) to the app behind
    ``client``; return the HTTP status it answered."""
    host, port = client.server.host, client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    head = [
        b"POST " + (target.encode("ascii") if isinstance(target, str) else target) + b" HTTP/1.1",
        b"Host: " + host.encode("ascii"),
        b"Connection: close",
        b"Content-Length: %d" % len(body),
        *(name + b": " + value for name, value in headers),
    ]
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):  # the server may answer before reading it all
            await writer.drain()
        response = b""
        with contextlib.suppress(ConnectionError):
            response = await reader.read()  # Connection: close, so until the server hangs up
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    while True:
        status_line = response.partition(b"\r\n")[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise AssertionError(f"no HTTP response, got {response[:80]!r}")
        if not status_line[1].startswith(b"1"):
            return int(status_line[1])
        response = response.partition(b"\r\n\r\n")[2]  # past "100 Continue" and the like
