"""Who may read and write what on the cluster: the exact ACL set, derived from the registry.

Every agency's stages and every shared stage connect as principals of their own, so a broker
with an authorizer (Apache Kafka's StandardAuthorizer) can hold each to what its code does:

- ``connector-<ori>``: write (and read back after a crash) ``src.<ori>.*`` and its hotlist;
  write producer dead letters.
- ``projector-<ori>``: read ``share.<ori>.*`` and its own ``src.<ori>.*`` (an agency searches
  its own records too) in its own consumer groups; write
  ``audit.search`` (the search-log outbox) and consumer dead letters.
- ``console-<ori>``: read ``alerts.<ori>``; read and write ``alerts.<ori>.acks``.
- ``webhooks-<ori>``: read ``alerts.<ori>`` in its own group; write consumer dead letters.
- ``router``: read ``src.*``; write ``share.*``, ``audit.dissemination`` and stream dead
  letters; its control topic, its tables' internal topics and its group.
- ``matcher``: read every ``src.<ori>.alpr.read`` and ``hotlist.*``; write ``alerts.<center>``
  of dispatch centers, ``audit.dissemination`` and stream dead letters; its tables and group.

So agency B's principals can read nothing of agency A's but what the router wrote to
``share.B.*`` and the alerts for B, and write nothing but B's own sources and acknowledgements.
Topic creation and ACL changes are the operator's (a super user of the broker, e.g.
``User:admin``): `mutualaid up`/`ensure_topics` and `mutualaid acls --apply` run as that user.

A principal's name is what the broker authenticates: the SCRAM user name, or the certificate's
common name under mTLS (``ssl.principal.mapping.rules`` = ``RULE:^CN=([^,]+)$/$1/,DEFAULT``,
as ``mutualaid.kafkaserver.security_properties`` sets it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mutualaid.agencies import Registry
from mutualaid.errors import MutualaidError
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    AUDIT_SEARCH,
    RECORD_KINDS,
    Kind,
    Stage,
    alert_acks_topic,
    alerts_topic,
    dlq_topic,
    hotlist_topic,
    router_control_topic,
    share_topic,
    source_topic,
)


class Op(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    DESCRIBE = "DESCRIBE"
    CREATE = "CREATE"


class Resource(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"


class Pattern(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: ``principal`` may ``op`` the ``resource`` named (or prefixed) ``name``."""

    principal: str
    resource: Resource
    pattern: Pattern
    name: str
    op: Op

    def covers(self, resource: Resource, name: str, op: Op) -> bool:
        if self.resource != resource:
            return False
        named = name == self.name if self.pattern == Pattern.LITERAL else name.startswith(self.name)
        # As Kafka's authorizer does: READ and WRITE imply DESCRIBE.
        return named and (op == self.op or (op == Op.DESCRIBE and self.op in (Op.READ, Op.WRITE)))

    def line(self) -> str:
        star = "*" if self.pattern == Pattern.PREFIXED else ""
        return f"User:{self.principal:<22} {self.op:<8} {self.resource.lower()} {self.name}{star}"


def principal(role: str, ori: str | None = None) -> str:
    """The principal a stage connects as: ``router``, ``matcher``, or ``<role>-<ori>``."""
    return f"{role}-{ori.lower()}" if ori else role


def _topic(p: str, name: str, *ops: Op, prefixed: bool = False) -> list[Acl]:
    pattern = Pattern.PREFIXED if prefixed else Pattern.LITERAL
    return [Acl(p, Resource.TOPIC, pattern, name, op) for op in ops]


def _group(p: str, name: str, *, prefixed: bool = False) -> Acl:
    return Acl(p, Resource.GROUP, Pattern.PREFIXED if prefixed else Pattern.LITERAL, name, Op.READ)


def agency_acls(ori: str, *, dispatch_center: bool) -> list[Acl]:
    """What one agency's own stages may do."""
    low = ori.lower()
    connector, projector = principal("connector", ori), principal("projector", ori)
    out = [
        *(a for kind in RECORD_KINDS for a in _topic(connector, source_topic(ori, kind), *RW)),
        *_topic(connector, hotlist_topic(ori), *RW),
        *_topic(connector, dlq_topic(Stage.PRODUCERS), Op.WRITE),
        *(a for kind in RECORD_KINDS for a in _topic(projector, share_topic(ori, kind), Op.READ)),
        *(a for kind in RECORD_KINDS for a in _topic(projector, source_topic(ori, kind), Op.READ)),
        _group(projector, f"mutualaid-projector-{low}-", prefixed=True),
        *_topic(projector, AUDIT_SEARCH, Op.WRITE),
        *_topic(projector, dlq_topic(Stage.CONSUMERS), Op.WRITE),
    ]
    if dispatch_center:
        console, webhooks = principal("console", ori), principal("webhooks", ori)
        out += [
            *_topic(console, alerts_topic(ori), Op.READ),
            *_topic(console, alert_acks_topic(ori), *RW),
            *_topic(webhooks, alerts_topic(ori), Op.READ),
            _group(webhooks, f"mutualaid-webhooks-{low}"),
            *_topic(webhooks, dlq_topic(Stage.CONSUMERS), Op.WRITE),
        ]
    return out


RW = (Op.READ, Op.WRITE)


def stream_app_acls(p: str, app_id: str) -> list[Acl]:
    """A stream stage's consumer group and the internal topics it creates for its tables
    (``<app_id>-`` prefixed: the router's holders changelog, the matcher's recent alerts)."""
    return [
        _group(p, app_id),
        *_topic(p, f"{app_id}-", Op.READ, Op.WRITE, Op.CREATE, prefixed=True),
    ]


def derive(registry: Registry, *, router_id: str, matcher_id: str) -> list[Acl]:
    """The whole ACL set for this registry, sorted, without duplicates."""
    router, matcher = principal("router"), principal("matcher")
    out: list[Acl] = []
    for agency in registry.agencies:
        out += agency_acls(agency.ori, dispatch_center=agency.dispatch_center)
    out += [
        *_topic(router, "src.", Op.READ, prefixed=True),
        *_topic(router, "share.", Op.WRITE, prefixed=True),
        *_topic(router, AUDIT_DISSEMINATION, Op.WRITE),
        *_topic(router, dlq_topic(Stage.STREAMS), Op.WRITE),
        # Its own control topic, which it creates at start like its tables' topics.
        *_topic(router, router_control_topic(router_id), *RW, Op.CREATE),
        *stream_app_acls(router, router_id),
    ]
    for agency in registry.agencies:
        out += _topic(matcher, source_topic(agency.ori, Kind.ALPR_READ), Op.READ)
        out += _topic(matcher, hotlist_topic(agency.ori), Op.READ)
        if agency.dispatch_center:
            out += _topic(matcher, alerts_topic(agency.ori), Op.WRITE)
    out += [
        *_topic(matcher, AUDIT_DISSEMINATION, Op.WRITE),
        *_topic(matcher, dlq_topic(Stage.STREAMS), Op.WRITE),
        *stream_app_acls(matcher, matcher_id),
    ]
    return sorted(set(out))


def allowed(acls: Iterable[Acl], who: str, resource: Resource, name: str, op: Op) -> bool:
    """Would the authorizer let ``who`` do ``op`` on ``name``? (Default deny, ALLOW entries.)"""
    return any(a.principal == who and a.covers(resource, name, op) for a in acls)


def await_in_force(admin: Any, acls: Iterable[Acl], timeout: float = 30.0) -> None:
    """Return once the broker ``admin`` talks to answers DescribeAcls with every one of
    ``acls``. CreateAcls returns when the controller has them; a broker enforces them only
    after replaying the metadata (a second on a loaded machine), and until then refuses."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    wanted = {(f"User:{a.principal}", a.resource.value, a.pattern.value, a.name, a.op.value)
              for a in acls}  # fmt: skip
    # None matches any name, principal and host (the stubs type them str).
    anything: Any = None
    every = AclBindingFilter(
        ResourceType.ANY, anything, ResourcePatternType.ANY, anything, anything,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        found = {
            (b.principal, b.restype.name, b.resource_pattern_type.name, b.name, b.operation.name)
            for b in admin.describe_acls(every).result(timeout)
        }
        missing = wanted - found
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise AclsNotInForce(
                f"{len(missing)} of {len(wanted)} ACLs not reported by the broker after "
                f"{timeout:.0f}s, e.g. {sorted(missing)[0]}"
            )
        time.sleep(0.2)


class AclsNotInForce(MutualaidError):
    """The broker did not report the ACLs just created."""


def to_bindings(acls: Iterable[Acl]) -> list:
    """confluent-kafka AclBindings for AdminClient.create_acls."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [
        AclBinding(
            ResourceType[a.resource.value],
            a.name,
            ResourcePatternType[a.pattern.value],
            f"User:{a.principal}",
            "*",
            AclOperation[a.op.value],
            AclPermissionType.ALLOW,
        )
        for a in acls
    ]
