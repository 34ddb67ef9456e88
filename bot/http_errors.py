"""Requests that are not valid HTTP, or whose body or headers are not what they say.

aiohttp answers a malformed request (a header with a control byte, a "Content-Encoding: gzip"
body that does not inflate) with 400, but logs it at ERROR with a traceback that quotes the
offending bytes; such a body escapes a handler's request.read() as a 500; and its answer to
an Expect header it does not know quotes the header, which fails (a 500) when the header
holds raw bytes. None of this is ours to fix in aiohttp, so it is caught at the app's edge:
a 400 or a 417, and one WARNING line that names the error type. A malformed request is the
sender's fault; at ERROR it would page someone, and its bytes may be anything (a contact's
text, a forged token).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MALFORMED = (HttpProcessingError, web.RequestPayloadError)


@web.middleware
async def unreadable_body_is_400(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No route has done anything when request.read() raises: each reads its body first."""
    try:
        return await handler(request)
    except web.RequestPayloadError:
        raise web.HTTPBadRequest(text="unreadable request body") from None


async def expect_handler(request: web.Request) -> None:
    """aiohttp's default Expect handling (web.post(..., expect_handler=expect_handler)),
    without the header quoted back in the 417."""
    if request.version == HttpVersion11:
        if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own does: the body has not begun
        else:
            raise web.HTTPExpectationFailed(text="unknown Expect header")


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger (pass as handler_args={"logger": ServerLog(...)}), with
    records about malformed requests cut down to a warning without the traceback."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, MALFORMED):
            self.logger.log(min(level, logging.WARNING), "http_request_malformed",
                            extra={"error": type(error).__name__})
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs  # the adapter adds nothing to the records it passes on
