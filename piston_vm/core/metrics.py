"""The service's Prometheus metrics, one registry per app (docs/operations.md, "Metrics").

`Metrics` is what the code records into; the base class records nothing (PISTON_VM_METRICS=off)
so that callers never branch. `PrometheusMetrics` keeps its own `CollectorRegistry`: the
process-wide default registry would refuse a second app in one process (the test suite builds
hundreds), and an app's figures should not leak into another's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# A route label for requests that matched no route (the catch-all 404, a 405 of aiohttp's own):
# raw paths are never labels, so a scanner cannot make new series.
UNMATCHED_ROUTE = "unmatched"
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
AUDIO_IN = "in"
AUDIO_OUT = "out"
# Seconds. Most requests take milliseconds; uploads and ZIPs of large audio take many seconds.
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                  30.0, 60.0)
EVENT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
COUCH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


class Metrics:
    """Records nothing; `PrometheusMetrics` records. Every method is cheap and never raises."""

    enabled = False

    def http_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        """One answered request: `route` is the route template, never the raw path."""

    def watch_requests_in_flight(self, read: Callable[[], int]) -> None:
        """Export the app's count of requests being handled, read at every scrape."""

    def uploads_in_flight(self) -> AbstractContextManager[object]:
        return nullcontext()

    def audio_bytes(self, direction: str, count: int) -> None:
        """Audio bytes received (`AUDIO_IN`, decoded) or sent (`AUDIO_OUT`)."""

    def couch_request(self, operation: str, outcome: str, duration_s: float) -> None:
        """One CouchDB client operation (storage/couch.py) and how it ended."""

    def watch_writes_short_of_quorum(self, read: Callable[[], int]) -> None:
        """Export the CouchDB client's count of 202 answers, read at every scrape."""

    def event_derived(self, name: str) -> None:
        """The event engine stored an event (docs/events.md)."""

    def event_handled(self, seconds_since_stored: float) -> None:
        """Every consumer (webhooks, e-mail) is done with an event, this long after the
        engine stored it."""

    def webhook_attempt(self, result: str) -> None:
        """One webhook request and its result (`success` or `failure`)."""

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper's Accept header asks for (Prometheus text or
        OpenMetrics), and its Content-Type."""
        return b"", CONTENT_TYPE_LATEST


Labels = tuple[str, ...]


class _Counter:
    """A counter family kept as plain numbers, one per label tuple."""

    def __init__(self, name: str, documentation: str, labels: Labels = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class _Histogram:
    """A histogram family kept as plain numbers: per label tuple, one count per bucket (not
    cumulative; the exposition sums them) and the sum."""

    def __init__(self, name: str, documentation: str, labels: Labels,
                 bounds: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels, self.bounds = (
            name, documentation, labels, bounds)
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.bounds) + 1)
            self.sums[labels] = 0.0
        # `le` buckets: the first bound at or above the value; past the last is +Inf.
        counts[bisect_left(self.bounds, value)] += 1
        self.sums[labels] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in self.counts.items():
            total, buckets = 0, []
            for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), counts,
                                    strict=True):
                total += count
                buckets.append((bound, float(total)))
            family.add_metric(labels, buckets, self.sums[labels])
        return family


class _Families(Collector):
    """Turns the plain numbers into metric families when the registry is scraped."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        for series in metrics.series:
            yield series.family()
        for name, documentation, read in metrics.gauges:
            yield GaugeMetricFamily(name, documentation, value=float(read()))
        yield CounterMetricFamily(
            "piston_vm_couchdb_writes_short_of_quorum",
            "Document writes CouchDB stored on fewer copies than asked (202 Accepted)",
            value=float(metrics.short_writes()))


class PrometheusMetrics(Metrics):
    """Counts into plain dicts and numbers, exported through prometheus-client's registry.

    prometheus-client's own Counter and Histogram take a lock and check their state on every
    update, which would be six such updates per request; everything here runs on the event
    loop's thread (the scrape too), so plain numbers are exact and cost a fraction. The
    registry, the exposition formats and the process collectors are the library's.
    """

    enabled = True

    def __init__(self, version: str, commit: str) -> None:
        # Without this the library's own families (build info, process) would also export
        # `_created` series, which text-format scrapers store as series of their own.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Info("piston_vm_build", "The running build", registry=registry).info(
            {"version": version, "commit": commit})
        self._requests = _Counter(
            "piston_vm_http_requests", "HTTP requests answered, by route template",
            ("route", "method", "status"))
        self._latency = _Histogram(
            "piston_vm_http_request_duration_seconds",
            "Time from a request's arrival to its handler's end (streamed bodies included)",
            ("route",), HTTP_BUCKETS_S)
        self._audio = _Counter(
            "piston_vm_audio_bytes", "Audio bytes received (in, decoded) and sent (out)",
            ("direction",))
        self._audio.values = {(AUDIO_IN,): 0.0, (AUDIO_OUT,): 0.0}
        self._couch = _Counter(
            "piston_vm_couchdb_requests", "CouchDB client operations, by outcome",
            ("operation", "outcome"))
        self._couch_latency = _Histogram(
            "piston_vm_couchdb_request_duration_seconds",
            "CouchDB client operations (attachment reads: until the response head)",
            ("operation",), COUCH_BUCKETS_S)
        self._events = _Counter(
            "piston_vm_events_derived", "Events the engine derived and stored, by name",
            ("name",))
        self._event_lag = _Histogram(
            "piston_vm_event_handled_seconds",
            "From an event's storing to every consumer (webhooks, e-mail) being done with it",
            (), EVENT_BUCKETS_S)
        self._webhooks = _Counter(
            "piston_vm_webhook_attempts", "Webhook requests, by result", ("result",))
        self.series: tuple[_Counter | _Histogram, ...] = (
            self._requests, self._latency, self._audio, self._couch, self._couch_latency,
            self._events, self._event_lag, self._webhooks)
        self._uploads = 0
        self._requests_in_flight: Callable[[], int] = lambda: 0
        self.short_writes: Callable[[], int] = lambda: 0
        self.gauges: tuple[tuple[str, str, Callable[[], int]], ...] = (
            ("piston_vm_http_requests_in_flight", "Requests being handled",
             lambda: self._requests_in_flight()),
            ("piston_vm_uploads_in_flight", "Audio uploads being received or stored",
             lambda: self._uploads),
        )
        registry.register(_Families(self))

    def http_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        self._requests.inc((route, method if method in METHODS else OTHER_METHOD, str(status)))
        self._latency.observe((route,), duration_s)

    def watch_requests_in_flight(self, read: Callable[[], int]) -> None:
        self._requests_in_flight = read

    @contextmanager
    def uploads_in_flight(self) -> Iterator[object]:
        self._uploads += 1
        try:
            yield None
        finally:
            self._uploads -= 1

    def audio_bytes(self, direction: str, count: int) -> None:
        self._audio.values[(direction,)] += count

    def couch_request(self, operation: str, outcome: str, duration_s: float) -> None:
        self._couch.inc((operation, outcome))
        self._couch_latency.observe((operation,), duration_s)

    def watch_writes_short_of_quorum(self, read: Callable[[], int]) -> None:
        self.short_writes = read

    def event_derived(self, name: str) -> None:
        self._events.inc((name,))

    def event_handled(self, seconds_since_stored: float) -> None:
        self._event_lag.observe((), seconds_since_stored)

    def webhook_attempt(self, result: str) -> None:
        self._webhooks.inc((result,))

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

