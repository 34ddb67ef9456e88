"""An HTTP client for the twilio SDK that can send its requests to a host other than Twilio."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import TraceConfig
from twilio.base.exceptions import TwilioRestException
from twilio.base.version import Version
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

# The same logger the parent class uses, so SDK request logs stay in one place.
_TWILIO_LOGGER = logging.getLogger("twilio.async_http_client")
FORM = "application/x-www-form-urlencoded"


class RedirectingTwilioHttpClient(AsyncTwilioHttpClient):
    """Async Twilio HTTP client that sends every request to ``base_url`` instead of Twilio.

    Tests and staging point the real twilio SDK at a fake Messages API, so the code under test
    builds, authenticates and parses requests exactly as in production and only the host
    changes. The scheme and host of each URL are replaced; path and query are kept.
    ``base_url=None`` leaves URLs alone, so production can use this class too.

    Usage::

        http_client = RedirectingTwilioHttpClient("http://127.0.0.1:8123", timeout=10)
        client = Client(account_sid, auth_token, http_client=http_client)
        await client.messages.create_async(to=..., from_=..., body=...)
        await http_client.close()

    Things the parent does that this class works around or callers must know about:

    * It opens its aiohttp session in ``__init__``, and aiohttp needs a running event loop for
      that, so construct this inside a coroutine and ``await close()`` on shutdown.
    * It never applies its own ``timeout``: the SDK passes ``timeout=None`` on every request and
      aiohttp reads a per-request ``None`` as "no timeout at all". This class falls back to the
      constructor's ``timeout`` so a stalled Twilio cannot hang a send forever.
    * It wraps credentials in ``aiohttp.BasicAuth``, which aiohttp 3.14 deprecates (a
      DeprecationWarning on every request, removal in aiohttp 4). This class sends the same
      ``Authorization`` header itself instead.
    * It hands its form to aiohttp as a dict, which aiohttp turns into the body through a
      FormData and a multipart writer it then throws away: about a tenth of the service's
      event-loop time under load. This class encodes the same bytes itself, as aiohttp would
      (``urlencode(..., doseq=True)``, UTF-8, the same Content-Type).
    """

    def __init__(
        self,
        base_url: str | None,
        *,
        pool_connections: bool = True,
        trace_configs: list[TraceConfig] | None = None,
        timeout: float | None = None,
        logger: logging.Logger = _TWILIO_LOGGER,
        proxy_url: str | None = None,
        max_retries: int | None = None,
    ) -> None:
        # Checked before the parent opens a session, so a bad URL leaks nothing.
        origin = _origin_only(base_url) if base_url is not None else None
        super().__init__(
            pool_connections=pool_connections,
            trace_configs=trace_configs,
            timeout=timeout,
            logger=logger,
            proxy_url=proxy_url,
            max_retries=max_retries,
        )
        self.base_url: str | None = origin

    def redirect(self, url: str) -> str:
        """Return ``url`` with its scheme and host swapped for ``base_url``."""
        if self.base_url is None:
            return url
        target = urlsplit(self.base_url)
        parts = urlsplit(url)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK passes it by this name
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            headers = {**(headers or {}), "Authorization": basic_auth_header(*auth)}
        body: dict[str, object] | bytes | None = data
        if data is not None and (headers or {}).get("Content-Type", FORM) == FORM:
            headers = {**(headers or {}), "Content-Type": FORM}
            body = urlencode(data, doseq=True).encode()
        response = await super().request(
            method,
            self.redirect(url),
            params=params,
            data=body,  # type: ignore[arg-type]
            headers=headers,
            auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )
        if response.status_code == 429:
            # The SDK's own exception keeps no headers, and Retry-After says how long to wait:
            # raise the same exception the SDK would, with the wait on it.
            sdk = Version.exception(method, url, response, "Too many requests")
            if isinstance(sdk, TwilioRestException):
                raise TwilioRateLimited(sdk, retry_after_seconds(response.headers))
        return response


class TwilioRateLimited(TwilioRestException):
    """Twilio answered 429: the SDK's TwilioRestException, plus `retry_after` (seconds, from
    the Retry-After header, or None when Twilio gave none)."""

    def __init__(self, sdk: TwilioRestException, retry_after: float | None) -> None:
        super().__init__(sdk.status, sdk.uri, sdk.msg, sdk.code, sdk.method, sdk.details)
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date (RFC 9110)."""
    value = (headers or {}).get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        # The date form is absolute; the wall clock turns it into a wait.
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def basic_auth_header(login: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value, encoded as aiohttp's BasicAuth did (latin-1)."""
    credentials = f"{login}:{password}".encode("latin-1")
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _origin_only(base_url: str) -> str:
    """Check that ``base_url`` is just scheme://host[:port], since a path there would be lost."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must look like http://host:port, got {base_url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a path, query or fragment, got {base_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))
