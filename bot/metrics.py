"""What GET /metrics says, in Prometheus' text format, from one registry per app.

Two kinds of figure:
- Read from the database at each scrape (queue, escalations, outbox backlog, rota), by
  `ScrapeCollector`: every process reads the same rows and reports the same values, so a
  dashboard takes max() over processes, not sum().
- Counted by this process (messages taken in, webhooks refused, outbox failures and
  retries, and the two histograms): a unit of work reports what it did once it has
  committed (bot.storage.after_commit.observe), and the writer hands that here. Prometheus
  sums these over processes, and a restart starts them at zero, as rate() expects.

The histograms are observations, not bucket counts read from the database: those would
shrink as retention purges conversations (to Prometheus a counter that went down has reset),
and cost a scan of every answered conversation at each scrape.

Labels are only ever channel names, outbox kinds and fixed reason codes, each from a known
list (anything else is counted as "other"): never a person, an address, a number or text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.domain import Channel, Observed, OutboxKind
from bot.rota import Rota
from bot.spool import Spool
from bot.storage.after_commit import Observation
from bot.storage.figures import Figures, read_figures
from bot.storage.reader import Reader
from handlers.escalation import empty_rota_problem, rota_problems, who_is_on_call

log = logging.getLogger(__name__)
CHANNELS = tuple(c.value for c in Channel)
KINDS = tuple(k.value for k in OutboxKind)
INBOUND_OUTCOMES = ("stored", "spooled", "duplicate")  # bot.intake.Taken's values
WEBHOOKS = ("twilio_sms", "twilio_status", "telegram")
REJECTIONS = ("malformed", "signature", "too_large", "media_type", "method", "expectation")
OTHER = "other"
# From a contact's first message to staff's first answer: minutes in hours, days at night.
REPLY_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
# From the first page to its acknowledgement: the ladder's steps are minutes apart.
ACK_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
SCRAPE_READ_TIMEOUT = 5.0  # seconds; a database slower than this reports "not ready"


def known(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


class Metrics:
    """Every figure the service exports. Built once, in the composition root."""

    def __init__(self, registry: CollectorRegistry, scrape: ScrapeCollector) -> None:
        self.registry = registry
        self._scrape = scrape
        self._lock = asyncio.Lock()  # one scrape's snapshot at a time
        self._inbound = Counter(
            "triage_inbound_messages", "Messages from contacts and staff taken in, by how: "
            "stored, spooled (the database was not there) or duplicate (a provider's repeat)",
            ["channel", "outcome"], registry=registry)
        self._rejected = Counter(
            "triage_webhook_rejections", "Webhook requests refused with a 4xx, by reason",
            ["webhook", "reason"], registry=registry)
        self._failed = Counter(
            "triage_outbox_failures", "Messages that will not arrive: a final send error, "
            "attempts used up, or the provider reported them undelivered",
            ["channel", "kind"], registry=registry)
        self._retried = Counter(
            "triage_outbox_retries", "Sends that failed and will be tried again",
            ["channel", "kind"], registry=registry)
        self._first_reply = Histogram(
            "triage_first_staff_reply_seconds",
            "From a contact's first message to staff's first reply", ["channel"],
            buckets=REPLY_BUCKETS, registry=registry)
        self._page_ack = Histogram(
            "triage_page_ack_seconds", "From an emergency's first page to its acknowledgement",
            buckets=ACK_BUCKETS, registry=registry)
        registry.register(scrape)
        # Every series exists from the start, at zero: increase() then sees the first one.
        # The inbound counter's series, kept: taken() runs for every message, and labels()
        # looks its child up under a lock each time.
        self._taken = {(channel, outcome): self._inbound.labels(channel, outcome)
                       for channel in CHANNELS for outcome in INBOUND_OUTCOMES}
        for channel in CHANNELS:
            self._first_reply.labels(channel)
            for kind in KINDS:
                self._failed.labels(channel, kind)
                self._retried.labels(channel, kind)
        for webhook in WEBHOOKS:
            for reason in REJECTIONS:
                self._rejected.labels(webhook, reason)

    def taken(self, channel: str, outcome: str) -> None:
        series = self._taken.get((channel, outcome)) or self._inbound.labels(
            known(channel, CHANNELS), known(outcome, INBOUND_OUTCOMES))
        series.inc()

    def rejected(self, webhook: str, reason: str) -> None:
        self._rejected.labels(known(webhook, WEBHOOKS), known(reason, REJECTIONS)).inc()

    def observe(self, seen: Observation) -> None:
        """The writer's observer: what a unit of work reported, after its commit."""
        labels = dict(seen.labels)
        channel = known(labels.get("channel", ""), CHANNELS)
        kind = known(labels.get("kind", ""), KINDS)
        if seen.what is Observed.FIRST_STAFF_REPLY:
            self._first_reply.labels(channel).observe(seen.value)
        elif seen.what is Observed.PAGE_ACK:
            self._page_ack.observe(seen.value)
        elif seen.what is Observed.OUTBOX_FAILED:
            self._failed.labels(channel, kind).inc(seen.value)
        elif seen.what is Observed.OUTBOX_RETRIED:
            self._retried.labels(channel, kind).inc(seen.value)

    async def scrape(self) -> bytes:
        async with self._lock:
            await self._scrape.refresh()
            return generate_latest(self.registry)


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    ready: bool
    spooled: int
    held: int
    figures: Figures | None  # None when the database could not be read
    rota_problems: int = 0
    nobody_on_call: bool = False


class ScrapeCollector(Collector):
    """The figures of the moment: the database's, read through the app's reader just
    before the registry collects, and this process's readiness and spool."""

    def __init__(self, reader: Reader, clock: Callable[[], datetime], rota: Rota, spool: Spool,
                 ready: Callable[[], bool]) -> None:
        self._reader = reader
        self._clock = clock
        self._rota = rota
        self._spool = spool
        self._ready = ready  # this process's own checks: writer, outbox worker, polling
        self._snapshot: Snapshot | None = None

    async def refresh(self) -> None:
        now = self._clock()
        figures, problems, nobody = None, 0, False
        try:
            async with asyncio.timeout(SCRAPE_READ_TIMEOUT):
                figures, problems, nobody = await self._reader.run(
                    lambda session: (read_figures(session),
                                     len(rota_problems(session, self._rota)),
                                     who_is_on_call(session, self._rota, now).gap))
        except Exception as exc:  # the database is down: say so, do not fail the scrape
            log.warning("metrics_database_unreadable", extra={"error": type(exc).__name__})
        problems += len(empty_rota_problem(self._rota))
        self._snapshot = Snapshot(
            now=now, ready=self._ready() and figures is not None, spooled=len(self._spool),
            held=self._spool.held(), figures=figures, rota_problems=problems,
            nobody_on_call=nobody)

    def describe(self) -> Iterable[Metric]:
        return []  # no duplicate names to check; and registering must not read anything

    def collect(self) -> Iterator[Metric]:
        if self._snapshot is not None:
            yield from snapshot_families(self._snapshot)


def snapshot_families(snap: Snapshot) -> Iterator[Metric]:
    """The scrape-time figures, as Prometheus metric families."""
    yield _gauge("triage_ready", "1 when this process can take messages in and send "
                 "(database, writer, outbox worker, Telegram polling), else 0",
                 int(snap.ready))
    yield _gauge("triage_spool_messages", "Messages waiting in this process's spool for "
                 "the database", snap.spooled)
    yield _gauge("triage_spool_held_messages", "Spooled messages set aside in held/ for a "
                 "person to look at", snap.held)
    figures = snap.figures
    if figures is None:
        return
    waiting = GaugeMetricFamily(
        "triage_contacts_waiting", "Open conversations whose contact staff have not "
        "answered yet", labels=["channel"])
    oldest = GaugeMetricFamily(
        "triage_contacts_waiting_oldest_seconds", "How long the longest-waiting of them "
        "has waited (0 when none)", labels=["channel"])
    for channel in CHANNELS:
        found = figures.waiting.get(channel)
        waiting.add_metric([channel], found.count if found else 0)
        oldest.add_metric([channel], _age(snap.now, found.oldest) if found else 0)
    yield waiting
    yield oldest
    escalations = GaugeMetricFamily(
        "triage_escalations_open", "Escalations not resolved, by whether someone has "
        "acknowledged them", labels=["state"])
    escalations.add_metric(["unacknowledged"], figures.unacknowledged)
    escalations.add_metric(["acknowledged"], figures.acknowledged)
    yield escalations
    yield _gauge("triage_escalations_past_ladder", "Unacknowledged escalations whose "
                 "ladder has paged its last step", figures.past_ladder)
    yield _gauge("triage_escalations_unpaged", "Unacknowledged escalations none of whose "
                 "pages has reached a provider (queued, failed, or nobody to page)",
                 figures.unpaged)
    backlog = GaugeMetricFamily(
        "triage_outbox_backlog", "Outbound messages queued or being sent",
        labels=["channel", "kind"])
    pending_age = GaugeMetricFamily(
        "triage_outbox_oldest_pending_seconds", "How long the oldest of them has waited "
        "to go out (0 when none)", labels=["channel"])
    counts = {(channel, kind): 0 for channel in CHANNELS for kind in KINDS}
    ages = dict.fromkeys(CHANNELS, 0.0)
    for (channel, kind), row in figures.backlog.items():
        key = (known(channel, CHANNELS), known(kind, KINDS))
        counts[key] = counts.get(key, 0) + row.count
        ages[key[0]] = max(ages.get(key[0], 0.0), _age(snap.now, row.oldest))
    for (channel, kind), n in sorted(counts.items()):
        backlog.add_metric([channel, kind], n)
    for channel, age in sorted(ages.items()):
        pending_age.add_metric([channel], age)
    yield backlog
    yield pending_age
    yield _gauge("triage_rota_problems", "Rota gaps check-config warns about: rotation "
                 "or backup members who cannot be paged, or an empty rotation",
                 snap.rota_problems)
    yield _gauge("triage_oncall_nobody", "1 when nobody is on call right now (every "
                 "page goes to all on-call and admins)", int(snap.nobody_on_call))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _age(now: datetime, since: datetime) -> float:
    return max((now - since).total_seconds(), 0.0)
