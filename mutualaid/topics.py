"""Every topic name mutualaid uses, built in one place from an ORI and a kind.

Nothing else in the code spells a topic name: a typo in one stage would otherwise be a silent
data path to nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from mutualaid.errors import UsageError

ORI_PATTERN = re.compile(r"^[A-Z]{2}[A-Z0-9]{7}$")


class Kind(StrEnum):
    """The kinds of record agencies share. The value is the suffix used in topic names."""

    CAD_INCIDENT = "cad.incident"
    ALPR_READ = "alpr.read"
    RMS_RECORD = "rms.record"
    HOTLIST_ENTRY = "hotlist.entry"


# The kinds that flow src -> router -> share topics. Hotlist entries are shared under agreements
# too, but only into hit alerts: the matcher reads hotlist.<ori> itself, nothing copies them.
RECORD_KINDS: tuple[Kind, ...] = (Kind.CAD_INCIDENT, Kind.ALPR_READ, Kind.RMS_RECORD)


class Stage(StrEnum):
    PRODUCERS = "producers"
    STREAMS = "streams"
    CONSUMERS = "consumers"


class InvalidOri(UsageError, ValueError):
    """Not the shape of an NCIC ORI."""


def check_ori(ori: str) -> str:
    """Return the ORI upper-cased, or raise ValueError naming the expected shape."""
    value = ori.strip().upper()
    if not ORI_PATTERN.match(value):
        raise InvalidOri(
            f"{ori!r} is not an NCIC ORI: expected 9 characters, two letters (the state) "
            "then seven letters or digits, e.g. CA0194200"
        )
    return value


def source_topic(ori: str, kind: Kind) -> str:
    """What an agency's connectors publish: src.<ori>.<kind>."""
    return f"src.{check_ori(ori).lower()}.{kind}"


@lru_cache(maxsize=4096)  # the router names one per copy it sends
def share_topic(partner_ori: str, kind: Kind) -> str:
    """What a partner may read: share.<partner-ori>.<kind>."""
    return f"share.{check_ori(partner_ori).lower()}.{kind}"


def dlq_topic(stage: Stage) -> str:
    return f"dlq.{stage}"


def hotlist_topic(ori: str) -> str:
    """An agency's hotlist entries, compacted: the latest state of every entry it owns."""
    return f"hotlist.{check_ori(ori).lower()}"


def alerts_topic(center_ori: str) -> str:
    """Hit alerts for one dispatch center."""
    return f"alerts.{check_ori(center_ori).lower()}"


def alert_acks_topic(center_ori: str) -> str:
    """Dispatchers' acknowledgements of that center's alerts."""
    return f"alerts.{check_ori(center_ori).lower()}.acks"


def router_control_topic(router_id: str) -> str:
    """The router's own control topic, partitioned like the source topics."""
    return f"{router_id}.control"


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog of a stream stage's table (``streams.table``: the router's ``holders``,
    the matcher's ``recent``), named as faust named it (``<app>-<table>-changelog``) when the
    stages ran on faust, so their entries carry over. Each stage creates its own at start."""
    return f"{app_id}-{table}-changelog"


AUDIT_DISSEMINATION = "audit.dissemination"
AUDIT_SEARCH = "audit.search"


DAY_MS = 24 * 3600 * 1000
ONE_YEAR_DAYS = 365  # the CJIS minimum for audit records


@dataclass(frozen=True)
class Retention:
    """How long the broker keeps records of the topics whose loss matters (days). Anything left
    to the broker's default is gone after 7 days on Apache Kafka."""

    audit_days: int = ONE_YEAR_DAYS
    dead_letter_days: int = ONE_YEAR_DAYS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_days: int | None = None  # None: the broker's default

    @property
    def config(self) -> dict[str, str]:
        """The topic configuration mutualaid sets and keeps set (see kafka.ensure_topics)."""
        config = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_days is not None:
            config["retention.ms"] = str(self.retention_days * DAY_MS)
        return config


def topics_for(
    oris: list[str], partitions: int, retention: Retention | None = None
) -> list[TopicSpec]:
    """The topics a deployment with these agencies needs, with explicit partition counts.

    Auto-created topics get whatever the broker defaults to, and a stage's table partitions
    follow its input partitions (``streams.table``), so every topic is created up front.
    The audit and dead-letter topics keep their records ``retention`` long (a year unless
    set); hotlists are compacted, so the latest state of every entry stays.
    """
    retention = retention or Retention()
    dead, audit = retention.dead_letter_days, retention.audit_days
    specs = [TopicSpec(dlq_topic(stage), 1, retention_days=dead) for stage in Stage]
    specs += [
        TopicSpec(AUDIT_DISSEMINATION, partitions, retention_days=audit),
        TopicSpec(AUDIT_SEARCH, 1, retention_days=audit),
    ]
    for ori in oris:
        for kind in RECORD_KINDS:
            specs.append(TopicSpec(source_topic(ori, kind), partitions))
            specs.append(TopicSpec(share_topic(ori, kind), partitions))
        specs.append(TopicSpec(hotlist_topic(ori), partitions, compacted=True))
        specs.append(TopicSpec(alerts_topic(ori), 1))
        specs.append(TopicSpec(alert_acks_topic(ori), 1))
    return specs


@lru_cache(maxsize=4096)  # the router parses one per event it reads
def parse_source_topic(name: str) -> tuple[str, Kind]:
    """'src.ca0990100.alpr.read' -> ('CA0990100', Kind.ALPR_READ); ValueError if not a source."""
    prefix, _, rest = name.partition(".")
    ori, _, kind = rest.partition(".")
    if prefix != "src":
        raise ValueError(f"{name!r} is not a source topic (src.<ori>.<kind>)")
    return check_ori(ori), Kind(kind)
