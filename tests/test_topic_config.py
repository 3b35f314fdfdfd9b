"""The configuration mutualaid sets on its topics, as the broker reports it: audit and dead-letter
retention (a year unless set), compacted hotlists, and the same kept on topics that existed."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.settings import Settings
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    AUDIT_SEARCH,
    DAY_MS,
    Kind,
    Retention,
    Stage,
    TopicSpec,
    dlq_topic,
    hotlist_topic,
    source_topic,
    topics_for,
)
from support.brokers import Broker
from support.regions import random_ori


def configs(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(10).items()}


def test_audit_and_dead_letters_are_kept_a_year_and_hotlists_compacted() -> None:
    specs = {s.name: s for s in topics_for(["CA0990100"], 4)}
    year = str(365 * DAY_MS)
    for name in (AUDIT_DISSEMINATION, AUDIT_SEARCH, *(dlq_topic(s) for s in Stage)):
        assert specs[name].config == {"cleanup.policy": "delete", "retention.ms": year}
    assert specs[hotlist_topic("CA0990100")].config == {"cleanup.policy": "compact"}
    # Source and share topics keep the broker's default: they are not the record of anything.
    assert "retention.ms" not in specs[source_topic("CA0990100", Kind.ALPR_READ)].config


def test_settings_choose_the_retention(monkeypatch) -> None:
    monkeypatch.setenv("MUTUALAID_AUDIT_RETENTION_DAYS", "2555")
    monkeypatch.setenv("MUTUALAID_DEAD_LETTER_RETENTION_DAYS", "30")
    assert Settings().retention == Retention(audit_days=2555, dead_letter_days=30)


def test_the_broker_holds_what_was_set_and_existing_topics_are_brought_in_line(
    broker: Broker,
) -> None:
    admin = wait_for_broker(broker.bootstrap_servers)
    ori = random_ori("CA")
    # A hotlist and a dead-letter topic made before, by hand, with the broker's defaults.
    dlq = f"dlq.test-{ori.lower()}"
    hotlist = hotlist_topic(ori)
    for future in admin.create_topics([NewTopic(dlq, 1, 1), NewTopic(hotlist, 2, 1)]).values():
        future.result(10)
    audit = f"audit.test-{ori.lower()}"
    specs = [
        TopicSpec(audit, 1, retention_days=400),
        TopicSpec(dlq, 1, retention_days=30),
        TopicSpec(hotlist, 2, compacted=True),
    ]
    assert ensure_topics(admin, specs, 1) == [audit]
    assert configs(admin, audit)["retention.ms"] == str(400 * DAY_MS)
    assert configs(admin, dlq)["retention.ms"] == str(30 * DAY_MS)
    assert configs(admin, hotlist)["cleanup.policy"] == "compact"
    assert ensure_topics(admin, specs, 1) == []
