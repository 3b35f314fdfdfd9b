"""Every Prometheus metric mutualaid exports, defined once (prefix ``mutualaid_``).

Stages import the metric they update; the labels are fixed here so dashboards and alert rules
can rely on them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("mutualaid_events_in", "Items a stage read.", ["stage", "kind"])
EVENTS_OUT = Counter(
    "mutualaid_events_out", "Events a stage wrote and had acknowledged.", ["stage", "kind"]
)
DEAD_LETTERS = Counter(
    "mutualaid_dead_letters", "Inputs sent to a dead-letter topic.", ["stage", "reason"]
)
SHARE_DECISIONS = Counter(
    "mutualaid_share_decisions", "Router decisions per partner.", ["partner", "kind", "outcome"]
)
RECALLS = Counter(
    "mutualaid_recalls",
    "Held records decided again after the agreements changed that were re-sent or withdrawn.",
    ["kind"],
)
HOLDERS_ENTRIES = Gauge(
    "mutualaid_holders_entries",
    "Records the router remembers partners hold, on its assigned partitions (its memory grows "
    "with them).",
)
HOLDERS_FORGOTTEN = Counter(
    "mutualaid_holders_forgotten",
    "Holders entries the router forgot a day after every copy passed its retention.",
)
STALE_EVENTS = Counter(
    "mutualaid_stale_events",
    "Source events older than the version partners already hold, so not shared again.",
    ["kind"],
)
FIELDS_ENCRYPTED = Counter(
    "mutualaid_fields_encrypted", "Fields sealed for a partner.", ["partner"]
)
POLICY_SECONDS = Histogram(
    "mutualaid_policy_evaluation_seconds",
    "Time to decide one event for every partner.",
    buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01),
)
DECRYPT_FAILURES = Counter(
    "mutualaid_decrypt_failures", "Sealed fields a partner could not open.", ["agency"]
)
INDEX_WRITES = Counter("mutualaid_index_writes", "Index rows changed by a projector.", ["agency"])
INDEX_PURGED = Counter("mutualaid_index_purged", "Records purged past their retention.", ["agency"])
SEARCHES = Counter("mutualaid_searches", "Searches run against an agency's index.", ["agency"])
CONSUMER_LAG = Gauge(
    "mutualaid_consumer_lag",
    "Records on a partition past its consumer group's committed offset: work a stage has not "
    "finished, which a restart would read again.",
    ["group", "topic", "partition"],
)
END_TO_END = Histogram(
    "mutualaid_end_to_end_latency_seconds",
    "From a connector publishing an event to a partner's index holding it.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

HITS = Counter(
    "mutualaid_hits", "Hit alerts sent to a dispatch center.", ["center", "reason", "match"]
)
HITS_SUPPRESSED = Counter(
    "mutualaid_hits_suppressed",
    "Hits not alerted: the same plate and entry alerted that center within the window.",
    ["center"],
)
HOTLIST_ENTRIES = Gauge("mutualaid_hotlist_entries", "Hotlist entries the matcher holds.")
ALERT_LATENCY = Histogram(
    "mutualaid_read_to_alert_latency_seconds",
    "From a connector publishing a read to the broker acknowledging its hit alert.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

CONSOLE_CLIENTS = Gauge(
    "mutualaid_console_clients", "Dispatch consoles connected (live streams).", ["center"]
)
CONSOLE_ALERTS = Counter(
    "mutualaid_console_alerts", "Hit alerts a dispatch console put on its board.", ["center"]
)
ALERT_ACKS = Counter("mutualaid_alert_acks", "Hit alerts acknowledged by dispatchers.", ["center"])
WEBHOOK_DELIVERIES = Counter(
    "mutualaid_webhook_deliveries",
    "Hit alerts handed to webhook endpoints: delivered, or dead-lettered after every retry.",
    ["center", "outcome"],
)
WEBHOOK_FAILED_ATTEMPTS = Counter(
    "mutualaid_webhook_failed_attempts",
    "Webhook POSTs that failed (connection error, timeout, 429 or 5xx) and will be retried.",
    ["center"],
)
WEBHOOK_LATENCY = Histogram(
    "mutualaid_webhook_delivery_latency_seconds",
    "From the matcher matching a hit to an endpoint accepting it (retries included).",
    ["center"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

INGEST_REQUESTS = Counter(
    "mutualaid_ingest_requests",
    "HTTP pushes of ALPR reads by outcome (accepted, unauthorized, too_large, bad_request, "
    "unavailable).",
    ["outcome"],
)


def serve_metrics(port: int) -> None:
    """Expose /metrics on ``port`` (0 turns it off). Each process of ``up`` gets its own port."""
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        raise SystemExit(
            f"mutualaid: cannot serve metrics on 127.0.0.1:{port} ({exc.strerror}); set "
            "metrics_port (MUTUALAID_METRICS_PORT) to a free port, or 0 for no metrics"
        ) from None


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)`` (in the order the metric names its labels), resolved once per
    label set: prometheus-client validates and looks up the labels on every call, a few
    microseconds a time that a stage deciding thousands of events a second pays many times."""
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found
