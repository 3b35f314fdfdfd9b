"""The sharing router: every source event, every partner an agreement names, one decision each.

``Router.route`` is the whole decision for one record as a pure function from the consumed
bytes to the records to produce (shares, one audit record per decision, or one dead letter),
so it can be tested and benchmarked without a broker. The faust agent in ``streams.app`` only
moves bytes in and out and decides when offsets may be committed.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime

from mutualaid.audit import dissemination_audit
from mutualaid.clock import Clock
from mutualaid.crypto import PublicKey
from mutualaid.deadletter import DeadLetters
from mutualaid.disclosure import FieldReport, MissingKey, disclose, new_disclosure
from mutualaid.events import new_envelope, record_key
from mutualaid.metrics import (
    EVENTS_IN,
    EVENTS_OUT,
    FIELDS_ENCRYPTED,
    POLICY_SECONDS,
    SHARE_DECISIONS,
    STALE_EVENTS,
    child,
)
from mutualaid.policy import Decision, FieldAction, Policy
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    Codecs,
    DeserializationError,
    RegistryClient,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    RECORD_KINDS,
    Kind,
    Stage,
    parse_source_topic,
    share_topic,
)

Holders = MutableMapping[str, dict]
# Labels that withdraw a record from every partner, whatever the agreements say.
WITHDRAWING_LABELS = frozenset({"sealed", "expunged"})


def holder_key(envelope: dict) -> str:
    return f"{envelope['kind']}/{envelope['source_ori']}/{envelope['record_id']}"


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: the producer's partitioner decides


@dataclass(frozen=True)
class Consumed:
    """A consumed record, exactly as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Router:
    def __init__(
        self,
        policy: Policy,
        store: SchemaStore,
        registry: RegistryClient | None,
        *,
        public_keys: dict[str, PublicKey],
        hash_key: bytes | None,
        control_topic: str = "mutualaid-router.control",
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.control_topic = control_topic
        self.public_keys = public_keys
        self.hash_key = hash_key
        self.clock = clock
        self._store = store
        self._decode = {k: AvroDeserializer(store, SOURCE_EVENT[k], registry) for k in RECORD_KINDS}
        self._encode = {k: AvroSerializer(store, SHARED_EVENT[k], registry) for k in RECORD_KINDS}
        self._dead_letters = DeadLetters(Output, Codecs(store, registry), Stage.STREAMS)
        self._encode_audit = AvroSerializer(store, AUDIT_DISSEMINATION_SCHEMA, registry)
        self.use_policy(policy)

    def use_policy(self, policy: Policy) -> None:
        """Start deciding with ``policy``, or raise MissingKey and keep deciding with the old.

        ``route`` is synchronous, so a swap falls between two events, never inside one: each
        event is decided wholly under one version of the agreements.
        """
        self._check_keys(policy)
        self.policy = policy

    def _check_keys(self, policy: Policy) -> None:
        """Refuse a policy if an agreement would need a key that is not there. Each partner's
        combined actions come from the agreements naming it, so checking every agreement's own
        covers every combination."""
        for agreement in policy.agreements:
            actions = {
                action
                for kind in agreement.kinds
                for action in policy.actions(agreement, kind).values()
            }
            if actions & {FieldAction.HASH, FieldAction.ENCRYPT_INDEXED} and self.hash_key is None:
                raise MissingKey(
                    f"agreement {agreement.id} hashes fields but there is no hash "
                    "key: run `mutualaid keys hash-key` (see hash_key_file)"
                )
            if not actions & {FieldAction.ENCRYPT, FieldAction.ENCRYPT_INDEXED}:
                continue
            for partner in policy.partners_of(agreement):
                if partner not in self.public_keys:
                    raise MissingKey(
                        f"agreement {agreement.id} encrypts fields for {partner}, which has no "
                        "public key in public_keys_dir: on the partner's side run `mutualaid keys "
                        f"generate --agency {partner}` and install its .pub file here"
                    )

    def route(self, record: Consumed, holders: Holders) -> list[Output]:
        """The records to produce for one consumed record.

        ``holders`` remembers which partners hold each record (a faust table in the app), so a
        later delete, seal or narrowing can be sent to exactly those partners.
        """
        ctx = SerializationContext(record.topic, record.partition, record.offset)
        if record.topic == self.control_topic:
            return self._recheck(record, holders, ctx)
        try:
            owner, kind = parse_source_topic(record.topic)
            event = self._decode[kind](record.value, ctx)
        except (DeserializationError, ValueError) as exc:
            return [self._dead(record, "undecodable", str(exc))]
        if event is None:
            return [
                self._dead(
                    record,
                    "null_value",
                    "a source topic never carries tombstones; publish a DELETE event instead",
                )
            ]
        child(EVENTS_IN, "streams", kind).inc()
        envelope = event["envelope"]
        if envelope["source_ori"] != owner or envelope["kind"] != str(kind):
            # An agency can only publish its own records: the topic, not the payload, says whose.
            return [
                self._dead(
                    record,
                    "wrong_topic",
                    f"event of {envelope['source_ori']} {envelope['kind']} on "
                    f"{record.topic}; each agency publishes only to its own topics",
                )
            ]
        return self._disseminate(kind, event, ctx, holders, record.partition)

    def _disseminate(
        self,
        kind: Kind,
        event: dict,
        ctx: SerializationContext,
        holders: Holders,
        partition: int,
    ) -> list[Output]:
        """Share with every partner the policy allows; withdraw from every partner that held
        the record and no longer may (deleted, sealed, or no longer qualifying)."""
        envelope = event["envelope"]
        key = holder_key(envelope)
        entry = holders.get(key) or {}
        held: dict[str, list] = dict(entry.get("partners", {}))
        withdrawing = envelope["op"] == "DELETE" or WITHDRAWING_LABELS & set(envelope["labels"])
        sent_version = entry.get("version", 0)
        if not withdrawing and envelope["version"] < sent_version:
            # Older than what partners hold: their indexes keep the newer copy, and the newer
            # version's decision stands. Deletes and seals are never skipped (below).
            STALE_EVENTS.labels(kind=str(kind)).inc()
            return []
        # A withdrawal takes effect whatever version it carries: it is sent at the highest
        # version any partner was sent, so no index keeps a newer copy over it.
        withdrawn_as = {**envelope, "version": max(envelope["version"], sent_version)}
        started = time.perf_counter()
        decisions = [] if withdrawing else self.policy.decide(event, self.clock())
        POLICY_SECONDS.observe(time.perf_counter() - started)
        outputs, holding = [], {}
        for decision in decisions:
            report = FieldReport()
            if decision.shares:
                assert decision.agreement is not None
                shared, report = self._share(kind, event, decision)
                outputs.append(
                    Output(
                        share_topic(decision.partner_ori, kind),
                        record_key(envelope),
                        self._encode[kind](shared, ctx),
                    )
                )
                holding[decision.partner_ori] = [decision.agreement.id, decision.agreement.version]
            outputs.append(
                self._audit(
                    envelope,
                    decision.partner_ori,
                    decision.outcome,
                    decision.agreement_ref,
                    list(decision.steps),
                    report,
                    contributors=decision.agreement_refs,
                    rules=[r.ref for r in decision.rules],
                )
            )
            child(SHARE_DECISIONS, decision.partner_ori, kind, decision.outcome.lower()).inc()
        denied = {d.partner_ori: d.steps[-1] for d in decisions if not d.shares}
        for partner, (agreement_id, version) in held.items():
            if partner in holding:
                continue
            reason = (
                "deleted at the source"
                if envelope["op"] == "DELETE"
                else "sealed or expunged at the source"
                if withdrawing
                else f"no longer qualifies: {denied.get(partner, 'no agreement names it')}"
            )
            outputs += self._withdraw(
                kind, withdrawn_as, ctx, partner, (agreement_id, version), reason
            )
        if holding:
            entry = {
                "partition": partition,
                "version": envelope["version"],
                "labels": envelope["labels"],
                "partners": holding,
            }
            if holders.get(key) != entry:
                holders[key] = entry
        elif held:
            holders.pop(key, None)
        child(EVENTS_OUT, "streams", kind).inc(len(holding))
        return outputs

    def rechecks(self, holders: Holders) -> list[Output]:
        """After the agreements changed: one control record per held record that some partner
        may no longer hold, to the partition the record lives on, so the withdrawal and the
        table update happen in-stream there (see ``_recheck``)."""
        outputs = []
        for key, entry in list(holders.items()):
            kind, owner, _ = key.split("/", 2)
            if any(
                self.policy.may_still_hold(owner, kind, partner, entry["labels"])
                for partner in entry["partners"]
            ):
                outputs.append(
                    Output(self.control_topic, key.encode(), b"recheck", entry["partition"])
                )
        return outputs

    def _recheck(
        self, record: Consumed, holders: Holders, ctx: SerializationContext
    ) -> list[Output]:
        key = (record.key or b"").decode()
        entry = holders.get(key)
        if entry is None:
            return []  # withdrawn or deleted since the recheck was posted
        kind, owner, record_id = key.split("/", 2)
        envelope = new_envelope(
            source_ori=owner,
            source_system="mutualaid-router",
            kind=Kind(kind),
            record_id=record_id,
            version=entry["version"],
            occurred_at=self.clock(),
            op="DELETE",
            labels=entry["labels"],
            now=self.clock(),
        )
        outputs, keep = [], {}
        for partner, agreement in entry["partners"].items():
            reason = self.policy.may_still_hold(owner, kind, partner, entry["labels"])
            if reason is None:
                keep[partner] = agreement
                continue
            outputs += self._withdraw(
                Kind(kind),
                envelope,
                ctx,
                partner,
                tuple(agreement),
                f"agreements narrowed: {reason}",
            )
        if keep:
            holders[key] = {**entry, "partners": keep}
        else:
            holders.pop(key, None)
        return outputs

    def _withdraw(
        self,
        kind: Kind,
        source: dict,
        ctx: SerializationContext,
        partner: str,
        agreement: tuple[str, int],
        reason: str,
    ) -> list[Output]:
        """A DELETE for the partner's index, a tombstone for compaction, and the audit record."""
        envelope = {**source, "op": "DELETE", "source_position": None}
        withdrawal = {
            "envelope": envelope,
            "disclosure": new_disclosure(partner, agreement),
            "body": None,
        }
        topic = share_topic(partner, kind)
        child(SHARE_DECISIONS, partner, kind, "withdrawn").inc()
        return [
            Output(topic, record_key(envelope), self._encode[kind](withdrawal, ctx)),
            Output(topic, record_key(envelope), None),
            self._audit(
                envelope, partner, "WITHDRAWN", agreement, [f"withdrawn: {reason}"], FieldReport()
            ),
        ]

    def _share(self, kind: Kind, event: dict, decision: Decision) -> tuple[dict, FieldReport]:
        shared, report = disclose(
            event,
            decision,
            decision.actions,
            registry=self.policy.registry,
            public_key=self.public_keys.get(decision.partner_ori),
            hash_key=self.hash_key,
        )
        if report.encrypted:
            child(FIELDS_ENCRYPTED, decision.partner_ori).inc(len(report.encrypted))
        return shared, report

    def _audit(
        self,
        envelope: dict,
        partner: str,
        outcome: str,
        agreement: tuple[str, int] | None,
        reasons: list[str],
        report: FieldReport,
        *,
        contributors: list[tuple[str, int]] | None = None,
        rules: list[str] | None = None,
    ) -> Output:
        """``agreement`` is the first of ``contributors`` (default: it alone)."""
        if contributors is None:
            contributors = [agreement] if agreement else []
        record = dissemination_audit(
            envelope,
            report,
            partner_ori=partner,
            decision=outcome,
            agreement_id=agreement[0] if agreement else None,
            agreement_version=agreement[1] if agreement else None,
            agreements=[{"id": i, "version": v} for i, v in contributors],
            rules=rules or [],
            reasons=reasons,
            decided_at=self.clock(),
        )
        value = self._encode_audit(record, SerializationContext(AUDIT_DISSEMINATION))
        return Output(AUDIT_DISSEMINATION, record_key(envelope), value)

    def _dead(self, record: Consumed, error_type: str, reason: str) -> Output:
        return self._dead_letters.consumed(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            payload=record.value,
            error_type=error_type,
            reason=reason,
        )
