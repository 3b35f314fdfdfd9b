"""The ACL set `mutualaid acls` derives: each agency's principals reach only their own topics.

These check the derivation against the topic layout the stages are built from
(``mutualaid.topics``); enforcement by a broker's authorizer needs Apache Kafka with SASL or
mTLS (Tansu has no authorizer) and is tested where that broker runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mutualaid import acls
from mutualaid.acls import Op, Resource, allowed, principal
from mutualaid.agencies import load_registry
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    AUDIT_SEARCH,
    RECORD_KINDS,
    Kind,
    alert_acks_topic,
    alerts_topic,
    router_control_topic,
    share_topic,
    source_topic,
    topics_for,
)

REGISTRY = load_registry(Path(__file__).parent.parent / "deploy" / "agencies.yaml")
ACLS = acls.derive(REGISTRY, router_id="mutualaid-router", matcher_id="mutualaid-matcher")
A, B = "CA0990100", "NV0990300"
T = Resource.TOPIC


def agency_principals(ori: str) -> list[str]:
    return [principal(role, ori) for role in ("connector", "projector", "console", "webhooks")]


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_agency_b_cannot_read_a_share_topic_or_write_a_source_topic_of_a(kind: Kind) -> None:
    for who in agency_principals(B):
        assert not allowed(ACLS, who, T, share_topic(A, kind), Op.READ)
        assert not allowed(ACLS, who, T, source_topic(A, kind), Op.READ)
        assert not allowed(ACLS, who, T, source_topic(A, kind), Op.WRITE)
    assert allowed(ACLS, principal("connector", B), T, source_topic(B, kind), Op.WRITE)
    assert allowed(ACLS, principal("projector", B), T, share_topic(B, kind), Op.READ)


def test_no_agency_may_write_the_dissemination_audit_or_read_another_centers_alerts() -> None:
    for agency in REGISTRY.agencies:
        for who in agency_principals(agency.ori):
            assert not allowed(ACLS, who, T, AUDIT_DISSEMINATION, Op.WRITE)
            assert not allowed(ACLS, who, T, AUDIT_DISSEMINATION, Op.READ)
            for other in REGISTRY.agencies:
                if other.ori != agency.ori:
                    assert not allowed(ACLS, who, T, alerts_topic(other.ori), Op.READ)


def test_only_the_router_writes_share_topics_and_the_matcher_reads_only_plate_reads() -> None:
    writers = {a.principal for a in ACLS if a.op == Op.WRITE and a.name.startswith("share.")}
    assert writers == {"router"}
    for agency in REGISTRY.agencies:
        assert allowed(ACLS, "matcher", T, source_topic(agency.ori, Kind.ALPR_READ), Op.READ)
        assert not allowed(ACLS, "matcher", T, source_topic(agency.ori, Kind.RMS_RECORD), Op.READ)


def test_every_topic_of_the_layout_has_a_writer_and_a_reader() -> None:
    """A topic added to the layout without ACLs for the stages that use it fails here."""
    layout = [s.name for s in topics_for(REGISTRY.oris, 4)]
    layout.append(router_control_topic("mutualaid-router"))
    everyone = {a.principal for a in ACLS}
    # topics_for makes alerts topics for every agency; only dispatch centers receive alerts.
    unused = {
        t
        for a in REGISTRY.agencies
        if not a.dispatch_center
        for t in (alerts_topic(a.ori), alert_acks_topic(a.ori))
    }
    for topic in sorted(set(layout) - unused):
        if topic in (AUDIT_DISSEMINATION, AUDIT_SEARCH) or topic.startswith("dlq."):
            # Read by the operator's auditors (super user), written by the stages.
            assert any(allowed(ACLS, p, T, topic, Op.WRITE) for p in everyone), topic
            continue
        assert any(allowed(ACLS, p, T, topic, Op.WRITE) for p in everyone), topic
        assert any(allowed(ACLS, p, T, topic, Op.READ) for p in everyone), topic


def test_stream_stages_may_create_only_their_own_internal_topics() -> None:
    changelog = "mutualaid-router-holders-changelog"
    assert allowed(ACLS, "router", T, changelog, Op.CREATE)
    assert not allowed(ACLS, "matcher", T, changelog, Op.CREATE)
    assert not allowed(ACLS, "router", T, "share.ca0990100.alpr.read", Op.CREATE)
    recent = "mutualaid-matcher-recent-changelog"
    assert allowed(ACLS, "matcher", T, recent, Op.CREATE)
    assert not allowed(ACLS, "router", T, recent, Op.WRITE)


def test_the_set_is_deterministic_and_converts_to_admin_bindings() -> None:
    again = acls.derive(REGISTRY, router_id="mutualaid-router", matcher_id="mutualaid-matcher")
    assert again == ACLS == sorted(set(ACLS))
    bindings = acls.to_bindings(ACLS)
    assert len(bindings) == len(ACLS)
    assert all(str(b.principal).startswith("User:") for b in bindings)
