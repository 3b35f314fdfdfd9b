"""The sharing router: every source event, every partner an agreement names, one decision each.

``Router.route`` is the whole decision for one record as a pure function from the consumed
bytes to the records to produce (shares, one audit record per decision, or one dead letter),
so it can be tested and benchmarked without a broker. The worker in ``streams.app`` only
moves bytes in and out and decides when offsets may be committed.

What partners hold is kept per record in ``holders`` (``streams.table``), so that whatever takes
something away reaches it: a delete or seal (at the highest version sent, so it always takes
effect), a new version that no longer qualifies, and a change of agreements (a recall: the
record decided again in full, read back from its source position). An entry::

    {"partition": 2, "offset": 17,          # where the latest source event is, to read back
     "version": 5,                          # the highest version any partner was sent
     "labels": [...],
     "policy": "<16 hex>",                  # the agreements it was decided under
     "revision": 1796186591701,             # the last disclosure revision sent (ms)
     "held_until": 1803962408000,           # the last copy's retain_until (ms); none: no limit
     "partners": {"CA0990200": ["agreement-id", 3, "<16 hex copy fingerprint>", "SHARED"]}}

An entry is forgotten a day after ``held_until`` (``holders_expiry``): every partner's index
has purged its copy by then, so there is nothing left to withdraw, and the table holds the
records partners may still hold instead of every record ever shared.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, NotRequired, TypedDict

from mutualaid import labels
from mutualaid.audit import dissemination_audit
from mutualaid.avrowriter import Encoded, compile_writer
from mutualaid.clock import Clock
from mutualaid.crypto import KeyAgreements, PublicKey
from mutualaid.deadletter import DeadLetters
from mutualaid.disclosure import (
    FieldReport,
    MissingKey,
    Treated,
    disclose,
    new_disclosure,
    pointer_envelope,
    pointer_found_by,
    treat,
)
from mutualaid.events import new_envelope, record_key
from mutualaid.metrics import (
    EVENTS_IN,
    EVENTS_OUT,
    FIELDS_ENCRYPTED,
    POLICY_SECONDS,
    RECALLS,
    SHARE_DECISIONS,
    STALE_EVENTS,
    child,
)
from mutualaid.policy import Decision, FieldAction, Policy, Tier
from mutualaid.sealing import SEALED_SHARE, Sealer
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    BODY_SCHEMA,
    ENVELOPE,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroSerializer,
    Codecs,
    DeserializationError,
    SerializationContext,
)
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    RECORD_KINDS,
    Kind,
    Stage,
    parse_source_topic,
    share_topic,
    source_topic,
)


class HoldersEntry(TypedDict):
    """What the holders table keeps of a record the router shared, by its holder key: where
    its latest source event is, what it was shared under, and each partner's copy."""

    partition: int
    offset: NotRequired[int]  # entries written before the router kept offsets have none
    version: int
    labels: list[str]
    policy: str  # the fingerprint of the owner's agreements for the kind when shared
    revision: NotRequired[int]
    held_until: NotRequired[int]  # absent: a copy is kept without limit (or written before)
    partners: dict[str, list[Any]]  # partner ORI -> the reference of its copy


Holders = MutableMapping[str, HoldersEntry]

# A partner's index purges a copy at its retain_until, looking every minute; the router forgets
# whom it shared a record with a day later, so a clock running ahead of the partner's, or a
# projector catching up after an outage, never holds a copy the router could not withdraw.
DAY_MS = 24 * 3600 * 1000
FORGET_AFTER_MS = DAY_MS
# Decisions whose holders-entry part is remembered (``Router._holding``); as many as the policy
# remembers decisions.
HOLDINGS_KEPT = 4096


def holders_expiry(entry: HoldersEntry) -> int | None:
    """When the holders table may forget ``entry`` (ms since the epoch), or None: never."""
    held = entry.get("held_until")
    return None if held is None else held + FORGET_AFTER_MS


def held_until(occurred_at: datetime, decisions: list[Decision]) -> int | None:
    """The latest ``retain_until`` of the copies these decisions share (ms), as ``disclose``
    sets it; None if any copy is kept without limit."""
    kept = [d.retention_days for d in decisions if d.shares]
    limited = [n for n in kept if n is not None]
    if not kept or len(limited) < len(kept):
        return None
    return int(occurred_at.timestamp() * 1000) + max(limited) * DAY_MS


# (topic, partition, offset) -> the record's bytes there, or None if it can no longer be read.
SourceReader = Callable[[str, int, int], bytes | None]


def _digest(shape: object) -> str:
    """64 bits of SHA-256 over a JSON shape: enough that two different shapes never meet."""
    text = json.dumps(shape, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_NO_AGREEMENTS = _digest([])


def _form(ref: list) -> str:
    """The outcome a partner's copy was sent as (SHARED or POINTER; entries kept before the
    outcome was recorded held full copies)."""
    return ref[3] if len(ref) > 3 else "SHARED"


def holder_key(envelope: dict) -> str:
    return f"{envelope['kind']}/{envelope['source_ori']}/{envelope['record_id']}"


class Output(NamedTuple):
    """A record to produce (a tuple: the router makes several per event it reads)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: the producer's partitioner decides


class Consumed(NamedTuple):
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
        codecs: Codecs,
        *,
        public_keys: dict[str, PublicKey],
        hash_key: bytes | None,
        control_topic: str = "mutualaid-router.control",
        clock: Clock = lambda: datetime.now(UTC),
        read_source: SourceReader = lambda topic, partition, offset: None,
        sealer: Sealer | None = None,
        key_agreements: KeyAgreements | None = None,
    ) -> None:
        self.control_topic = control_topic
        self.sealer = sealer
        # Field encryption's key agreements, one per partner for a while (the worker's); None:
        # one per record.
        self.key_agreements = key_agreements
        self.read_source = read_source
        self.public_keys = public_keys
        self.hash_key = hash_key
        self.clock = clock
        self._decode = {k: codecs.deserializer(SOURCE_EVENT[k]) for k in RECORD_KINDS}
        self._encode = {k: codecs.serializer(SHARED_EVENT[k]) for k in RECORD_KINDS}
        # What a sealed record holds is framed without the registry: no tool but the partner's
        # reader ever sees it, and the topic's registry subject is the SealedShare's.
        self._encode_body = {k: AvroSerializer(codecs.store, SHARED_EVENT[k]) for k in RECORD_KINDS}
        self._encode_sealed = codecs.serializer(SEALED_SHARE)
        self._dead_letters = DeadLetters(Output, codecs, Stage.STREAMS)
        self._encode_audit = codecs.serializer(AUDIT_DISSEMINATION_SCHEMA)
        # The last body treated with a decision's field actions: one record shared with several
        # partners under the same actions is treated once (only the sealing is each partner's).
        self._treated: Treated | None = None
        # The last copy's envelope and body, and the bytes written for them (``_written``).
        self._write_envelope = compile_writer(codecs.store.get(ENVELOPE))
        self._write_body = {
            k: compile_writer(codecs.store.get(BODY_SCHEMA[k])) for k in RECORD_KINDS
        }
        self._last_written: tuple[Any, Encoded, Any, Encoded | None] = (
            None,
            Encoded(b"", ""),
            None,
            None,
        )
        self.use_policy(policy)

    def use_policy(self, policy: Policy) -> None:
        """Start deciding with ``policy``, or raise MissingKey and keep deciding with the old.

        ``route`` is synchronous, so a swap falls between two events, never inside one: each
        event is decided wholly under one version of the agreements.
        """
        self._check_keys(policy)
        covering: dict[tuple[str, str], list] = {}
        for a in sorted(policy.agreements, key=lambda a: a.id):
            for kind in a.kinds:
                shape = [a.model_dump(mode="json"), sorted(policy.partners_of(a))]
                covering.setdefault((a.owner, str(kind)), []).append(shape)
        # Rules and assurances shape every decision of an owner and kind: a change to any of
        # them changes every fingerprint, so every held record is decided again.
        common = [
            [r.model_dump(mode="json") for r in policy.rules],
            [
                [a.ori, [x.model_dump(mode="json") for x in a.assurances]]
                for a in policy.registry.agencies
            ],
        ]
        self.policy = policy
        self._policy_fingerprints = {
            key: _digest([shapes, common]) for key, shapes in covering.items()
        }
        self._copy_fingerprints: dict[tuple, str] = {}
        self._holdings: dict[tuple[int, Kind], tuple[Decision, list]] = {}
        self._next_change = policy.next_change(self.clock())

    def _check_keys(self, policy: Policy) -> None:
        """Refuse a policy if an agreement would need a key that is not there. Each partner's
        combined actions come from the agreements naming it, so checking every agreement's own
        covers every combination."""
        unsealed = self.unsealed_partners(policy)
        if self.sealer is not None and self.sealer.required and unsealed:
            raise MissingKey(
                f"share_sealing is required but no public key is in public_keys_dir for "
                f"{', '.join(unsealed)}: on each partner's side run `mutualaid keys generate "
                "--agency <ori>` and install its .pub file here (or set share_sealing: keyed)"
            )
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
            pointers = (
                agreement.tier == Tier.POINTER
                or agreement.conditions.on_excluded_label == "pointer"
            )
            if pointers and self.hash_key is None:
                raise MissingKey(
                    f"agreement {agreement.id} gives pointers, whose record reference and "
                    "match keys are keyed hashes, but there is no hash key: run `mutualaid "
                    "keys hash-key` (see hash_key_file)"
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

    def unsealed_partners(self, policy: Policy | None = None) -> list[str]:
        """Partners the agreements name that would get clear copies: no public key to seal to
        (every partner, with sealing off)."""
        policy = policy or self.policy
        partners = {p for a in policy.agreements for p in policy.partners_of(a)}
        if self.sealer is None:
            return sorted(partners)
        return sorted(p for p in partners if self.sealer.public_key(p) is None)

    def route(self, record: Consumed, holders: Holders) -> list[Output]:
        """The records to produce for one consumed record.

        ``holders`` remembers which partners hold each record (a ``streams.table`` in the
        worker), so a later delete, seal or narrowing can be sent to exactly those partners. A
        record on the control topic is a recheck (``rechecks``): the held record is decided
        again.
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
        position = (record.partition, record.offset)
        return self._disseminate(kind, event, ctx, holders, position)

    def _disseminate(
        self,
        kind: Kind,
        event: dict,
        ctx: SerializationContext,
        holders: Holders,
        position: tuple[int, int],
    ) -> list[Output]:
        """Share with every partner the policy allows; withdraw from every partner that held
        the record and no longer may (deleted, sealed, or no longer qualifying)."""
        envelope = event["envelope"]
        key = holder_key(envelope)
        entry: Mapping[str, Any] = holders.get(key) or {}
        held: dict[str, list] = dict(entry.get("partners", {}))
        withdrawing = envelope["op"] == "DELETE" or labels.WITHDRAWING & set(envelope["labels"])
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
        now = self.clock()  # one decision time for every partner's copy and audit record
        decisions = [] if withdrawing else self.policy.decide(event, now)
        POLICY_SECONDS.observe(time.perf_counter() - started)
        revision = self._next_revision(entry, now)
        outputs, holding = [], {}
        for decision in decisions:
            if decision.shares:
                assert decision.agreement is not None
                shared, report = self._copy(kind, event, decision, ctx, revision)
                outputs.append(shared)
                holding[decision.partner_ori] = self._holding(kind, decision)
            else:
                report = FieldReport()
            outputs.append(
                self._audit(
                    envelope,
                    decision.partner_ori,
                    decision.outcome,
                    decision.agreement_ref,
                    list(decision.steps),
                    report,
                    contributors=decision.agreement_refs,
                    rules=decision.rule_refs,
                    at=now,
                )
            )
            child(SHARE_DECISIONS, decision.partner_ori, kind, decision.outcome.lower()).inc()
        denied = {d.partner_ori: d.steps[-1] for d in decisions if not d.shares}
        for partner, ref in held.items():
            if partner in holding:
                if _form(ref) != holding[partner][3]:  # a pointer now, or full now: one form
                    outputs += self._withdraw(
                        kind,
                        withdrawn_as,
                        ctx,
                        partner,
                        ref,
                        revision,
                        f"replaced by a copy of another tier ({holding[partner][3].lower()})",
                    )
                continue
            reason = (
                "deleted at the source"
                if envelope["op"] == "DELETE"
                else "sealed or expunged at the source"
                if withdrawing
                else f"no longer qualifies: {denied.get(partner, 'no agreement names it')}"
            )
            outputs += self._withdraw(kind, withdrawn_as, ctx, partner, ref, revision, reason)
        if holding:
            partition, offset = position
            new_entry: HoldersEntry = {
                "partition": partition,
                "offset": offset,
                "version": envelope["version"],
                "labels": envelope["labels"],
                "policy": self._policy_fingerprint(envelope["source_ori"], str(kind)),
                "revision": revision,
                "partners": holding,
            }
            until = held_until(envelope["occurred_at"], decisions)
            if until is not None:
                new_entry["held_until"] = until
            holders[key] = new_entry
        elif held:
            holders.pop(key, None)
        child(EVENTS_OUT, "streams", kind).inc(len(holding))
        return outputs

    def _next_revision(self, entry: Mapping[str, Any], now: datetime | None = None) -> int:
        """The revision of what is sent now: the decision time in milliseconds, and always
        above the last one sent for the record, so a recall's copy or withdrawal replaces the
        copy an index holds even if two routers' clocks disagree."""
        now = now or self.clock()
        return max(int(now.timestamp() * 1000), entry.get("revision", 0) + 1)

    def _holding(self, kind: Kind, decision: Decision) -> list:
        """What the holders entry keeps of one partner's copy: the first agreement it cites,
        and the fingerprint a recall compares to know whether that copy must be replaced.

        Worked out once per decision (the policy hands one decision to every event that
        settles alike) and shared by the entries: not to be changed in place."""
        known = self._holdings.get((id(decision), kind))
        if known is not None and known[0] is decision:  # not another decision at that id
            return known[1]
        agreement = decision.agreement
        assert agreement is not None
        fingerprint = self._copy_fingerprint(kind, decision)
        holding = [agreement.id, agreement.version, fingerprint, decision.outcome]
        if len(self._holdings) >= HOLDINGS_KEPT:
            self._holdings.clear()  # the policy forgets its decisions likewise
        self._holdings[(id(decision), kind)] = (decision, holding)
        return holding

    def _copy_fingerprint(self, kind: Kind, decision: Decision) -> str:
        """A digest of everything that shapes a partner's copy besides the record itself: the
        tier, the agreements combined, their combined field actions, retention and what a
        pointer is found by. Agreement versions are left out: an edit that changes none of
        these does not re-send anything."""
        full = decision.outcome == "SHARED"
        known = (
            kind,
            decision.outcome,
            tuple(sorted(a.id for a in decision.agreements)),
            tuple(sorted(decision.actions.items())) if full else (),
            decision.retention_days,
            () if full else tuple(pointer_found_by(decision)),
        )
        if known not in self._copy_fingerprints:  # shared by many records: computed once
            self._copy_fingerprints[known] = _digest([str(x) for x in known])
        return self._copy_fingerprints[known]

    def _policy_fingerprint(self, owner: str, kind: str) -> str:
        """A digest of every agreement covering this owner and kind, with the partners it
        resolves to. Kept in each holders entry: an entry whose digest differs from the
        current one was decided under other agreements (edited live, or while the router was
        stopped) and is rechecked in full."""
        return self._policy_fingerprints.get((owner, kind), _NO_AGREEMENTS)

    def rechecks(self, holders: Holders, every: bool = False) -> list[Output]:
        """One control record per held record decided under other agreements than the current
        ones (``every``: per held record, as when time alone changed a decision), to the
        partition the record lives on, so the recall and the table update happen in-stream
        there (see ``_recheck``). Sorted by source position, so reading the records back is
        one pass along each partition."""
        due = []
        for key, entry in list(holders.items()):
            kind, owner, _ = key.split("/", 2)
            if every or entry.get("policy") != self._policy_fingerprint(owner, kind):
                due.append((entry["partition"], entry.get("offset", -1), key))
        return [
            Output(self.control_topic, key.encode(), b"recheck", partition)
            for partition, _, key in sorted(due)
        ]

    def due_rechecks(self, holders: Holders) -> list[Output]:
        """Rechecks of every held record once the clock reaches the moment the policy said a
        decision could change by time alone (``Policy.next_change``); then the next moment."""
        now = self.clock()
        if self._next_change is None or now < self._next_change:
            return []
        self._next_change = self.policy.next_change(now)
        return self.rechecks(holders, every=True)

    def _recheck(
        self, record: Consumed, holders: Holders, ctx: SerializationContext
    ) -> list[Output]:
        """Decide a held record again in full, from its latest source event read back: each
        partner whose copy is now shaped otherwise gets the new copy (a higher revision of the
        same version, which its index applies over the old), each that may no longer hold it
        a withdrawal. If the source event cannot be read back (past the topic's retention),
        every copy is withdrawn: without the record it cannot be shown to be allowed."""
        key = (record.key or b"").decode()
        entry = holders.get(key)
        if entry is None:
            return []  # withdrawn or deleted since the recheck was posted
        kind_name, owner, record_id = key.split("/", 2)
        kind = Kind(kind_name)
        event, missing = self._read_back(key, entry)
        revision = self._next_revision(entry)
        if event is None:
            envelope = new_envelope(
                source_ori=owner,
                source_system="mutualaid-router",
                kind=kind,
                record_id=record_id,
                version=entry["version"],
                occurred_at=self.clock(),
                op="DELETE",
                labels=entry["labels"],
                now=self.clock(),
            )
            decisions = {}
        else:
            envelope = event["envelope"]
            decisions = {d.partner_ori: d for d in self.policy.decide(event, self.clock())}
        outputs, keep = [], {}
        for partner, ref in entry["partners"].items():
            decision = decisions.get(partner)
            if event is None:
                reason = f"recalled: {missing}"
            elif decision is None or not decision.shares:
                why = decision.steps[-1] if decision else "no agreement names it any more"
                reason = f"agreements narrowed: {why}"
            else:
                holding = self._holding(kind, decision)
                if holding[2] == (ref[2] if len(ref) > 2 else None):
                    keep[partner] = ref
                    continue
                assert event is not None
                if _form(ref) != holding[3]:  # the old form is withdrawn: one copy only
                    outputs += self._withdraw(
                        kind,
                        envelope,
                        ctx,
                        partner,
                        ref,
                        revision,
                        "replaced by a copy of "
                        f"another tier ({holding[3].lower()}): agreements changed (recall)",
                    )
                shared, report = self._copy(kind, event, decision, ctx, revision)
                steps = [*decision.steps, "replaces the copy held: agreements changed (recall)"]
                outputs += [
                    shared,
                    self._audit(
                        envelope, partner, decision.outcome, decision.agreement_ref, steps, report
                    ),
                ]
                keep[partner] = holding
                continue
            outputs += self._withdraw(kind, envelope, ctx, partner, ref, revision, reason)
        if outputs:
            RECALLS.labels(kind=kind_name).inc()
        if keep:
            kept: HoldersEntry = {
                **entry,
                "policy": self._policy_fingerprint(owner, kind_name),
                "revision": revision if outputs else entry.get("revision", 0),
                "partners": keep,
            }
            # Each copy kept has the retention its decision says now (the copy fingerprint
            # covers it: one shaped otherwise was re-sent, replacing the partner's old copy).
            until = held_until(envelope["occurred_at"], [decisions[p] for p in keep])
            kept.pop("held_until", None)
            if until is not None:
                kept["held_until"] = until
            holders[key] = kept
        else:
            holders.pop(key, None)
        return outputs

    def _read_back(self, key: str, entry: HoldersEntry) -> tuple[dict | None, str]:
        """The latest source event of a held record, or None and why it cannot be had."""
        kind, owner, _ = key.split("/", 2)
        if "offset" not in entry:
            return None, "its source position was not kept (shared before full recall)"
        topic = source_topic(owner, Kind(kind))
        where = f"{topic} partition {entry['partition']} offset {entry['offset']}"
        value = self.read_source(topic, entry["partition"], entry["offset"])
        if value is None:
            return None, f"its source event ({where}) can no longer be read (retention)"
        try:
            event = self._decode[Kind(kind)](
                value, SerializationContext(topic, entry["partition"], entry["offset"])
            )
        except DeserializationError as exc:
            return None, f"its source event ({where}) does not decode: {exc}"
        envelope = (event or {}).get("envelope") or {}
        if holder_key(envelope) != key or envelope["version"] != entry["version"]:
            return None, f"the event at {where} is not version {entry['version']} of {key}"
        return event, ""

    def _withdraw(
        self,
        kind: Kind,
        source: Mapping[str, Any],
        ctx: SerializationContext,
        partner: str,
        ref: list,
        revision: int,
        reason: str,
    ) -> list[Output]:
        """A DELETE for the partner's index, a tombstone for compaction, and the audit record
        (which names the record itself; a pointer's withdrawal goes to its opaque reference)."""
        envelope = {**source, "op": "DELETE", "source_position": None}
        agreement = (ref[0], ref[1])
        sent, tier = envelope, "FULL"
        if _form(ref) == "POINTER":
            assert self.hash_key is not None  # pointers are refused without it
            sent, tier = pointer_envelope(envelope, self.hash_key) | {"op": "DELETE"}, "POINTER"
        disclosure = new_disclosure(partner, agreement, tier) | {"revision": revision}
        withdrawal = {"envelope": sent, "disclosure": disclosure, "body": None}
        topic = share_topic(partner, kind)
        child(SHARE_DECISIONS, partner, kind, "withdrawn").inc()
        return [
            Output(topic, record_key(sent), self._encoded(kind, withdrawal, ctx)),
            Output(topic, record_key(sent), None),
            self._audit(
                envelope, partner, "WITHDRAWN", agreement, [f"withdrawn: {reason}"], FieldReport()
            ),
        ]

    def _copy(
        self, kind: Kind, event: dict, decision: Decision, ctx: SerializationContext, revision: int
    ) -> tuple[Output, FieldReport]:
        """The partner's copy of the record under this decision, ready to produce."""
        shared, report = self._share(kind, event, decision)
        shared["disclosure"]["revision"] = revision
        out = Output(
            share_topic(decision.partner_ori, kind),
            record_key(shared["envelope"]),
            self._encoded(kind, shared, ctx),
        )
        return out, report

    def _encoded(self, kind: Kind, shared: dict, ctx: SerializationContext) -> bytes | None:
        """A partner's record as it goes on its share topic: sealed whole to the partner's key
        when sealing is on and it has one, else as it is."""
        partner = shared["disclosure"]["partner_ori"]
        written = self._written(kind, shared)
        if self.sealer is None or self.sealer.public_key(partner) is None:
            return self._encode[kind](written, ctx)
        sealed = self.sealer.seal(shared, self._encode_body[kind](written, ctx) or b"")
        assert sealed is not None  # the partner's key was just there
        return self._encode_sealed(sealed, ctx)

    def _written(self, kind: Kind, shared: dict) -> dict:
        """``shared`` with its envelope and body already written as Avro, reusing the last
        copy's bytes when this copy carries the same (one event to several partners): an event
        shared with ten partners has its envelope and body encoded once, not ten times."""
        envelope, body = shared["envelope"], shared["body"]
        last_envelope, envelope_bytes, last_body, body_bytes = self._last_written
        if envelope != last_envelope:  # each copy has its own envelope dict: equal ones
            envelope_bytes = Encoded(self._write_envelope(envelope), ENVELOPE)
        if body is not last_body:  # unchanged, a copy's body is the event's own (and held)
            body_bytes = (
                None if body is None else Encoded(self._write_body[kind](body), BODY_SCHEMA[kind])
            )
        self._last_written = (envelope, envelope_bytes, body, body_bytes)
        return {**shared, "envelope": envelope_bytes, "body": body_bytes}

    def _share(self, kind: Kind, event: dict, decision: Decision) -> tuple[dict, FieldReport]:
        body, treated = event["body"], self._treated
        full = decision.outcome == "SHARED" and body is not None  # a pointer carries no body
        if full and (treated is None or not treated.fits(body, decision.actions)):
            treated = self._treated = treat(
                body, decision.actions, hash_key=self.hash_key, agreements=decision.agreement_names
            )
        shared, report = disclose(
            event,
            decision,
            decision.actions,
            registry=self.policy.registry,
            public_key=self.public_keys.get(decision.partner_ori),
            hash_key=self.hash_key,
            key_agreements=self.key_agreements,
            treated=treated,
        )
        if report.encrypted:
            child(FIELDS_ENCRYPTED, decision.partner_ori).inc(len(report.encrypted))
        return shared, report

    def _audit(
        self,
        envelope: Mapping[str, Any],
        partner: str,
        outcome: str,
        agreement: tuple[str, int] | None,
        reasons: list[str],
        report: FieldReport,
        *,
        contributors: list[tuple[str, int]] | None = None,
        rules: list[str] | None = None,
        at: datetime | None = None,
    ) -> Output:
        """``agreement`` is the first of ``contributors`` (default: it alone); ``at`` is when
        it was decided (default: now)."""
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
            decided_at=at or self.clock(),
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
