"""GET /metrics, who may read it, and the count of refused webhooks.

A scrape is let in from the `[metrics] allow` networks, or from anywhere with
"Authorization: Bearer <TRIAGE_METRICS_TOKEN>". A token that is given must be right, even
from an allowed network: a scraper sending a stale one should hear so. Anything else gets
403. Behind a reverse proxy in `[server] trusted_proxies`, the client's own address counts
(bot.remote), so the proxy's loopback address lets nobody in.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.config import MetricsSettings
from bot.metrics import Metrics
from bot.remote import Networks, remote_address, within

PATH = "/metrics"
# The webhook routes whose refusals are counted, by the name their label carries.
WEBHOOKS = {
    "/webhooks/twilio/sms": "twilio_sms",
    "/webhooks/twilio/status": "twilio_status",
    "/webhooks/telegram": "telegram",
}
# Why a webhook was refused, from the status it was refused with. The webhooks refuse for
# these reasons only (bot.channels.sms, bot.channels.telegram, bot.http_errors).
REASONS = {
    400: "malformed",
    403: "signature",  # Twilio's signature or Telegram's secret token did not check out
    405: "method",
    413: "too_large",
    415: "media_type",
    417: "expectation",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, settings: MetricsSettings,
                 trusted_proxies: Networks) -> None:
        self._metrics = metrics
        self._allow = settings.allow
        self._token = settings.token.reveal().encode()
        self._trusted = trusted_proxies

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.handle, allow_head=False)]

    def allows(self, request: web.Request) -> bool:
        given = request.headers.get(hdrs.AUTHORIZATION)
        if given is not None:
            scheme, _, token = given.partition(" ")
            # surrogateescape: raw header bytes arrive as lone surrogates; compared as bytes,
            # in constant time, whatever they are.
            return (bool(self._token) and scheme.lower() == "bearer"
                    and hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"),
                                            self._token))
        return within(remote_address(request, self._trusted), self._allow)

    async def handle(self, request: web.Request) -> web.Response:
        if not self.allows(request):
            raise web.HTTPForbidden(text="not allowed to read the metrics")
        body = await self._metrics.scrape()
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST,
                                                hdrs.CACHE_CONTROL: "no-store"})


def count_rejections(metrics: Metrics) -> Middleware:
    """A middleware that counts the webhooks' 4xx answers, by webhook and reason."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        webhook = WEBHOOKS.get(request.path)
        if webhook is None:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _count(metrics, webhook, exc.status)
            raise
        _count(metrics, webhook, response.status)
        return response

    return middleware


def _count(metrics: Metrics, webhook: str, status: int) -> None:
    reason = REASONS.get(status)
    if reason is not None:
        metrics.rejected(webhook, reason)
