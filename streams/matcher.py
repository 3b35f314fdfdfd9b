"""The hit matcher's logic: hotlists held in memory, each plate read matched against them.

Pure and synchronous like the router, so the rules are tested without a broker; the worker
(``streams.matcher_app``) feeds it reads and hotlist records and sends what it returns.

Who gets an alert: a dispatch center that may see both halves of it. The read must be its own
or shared with it under an agreement (alpr.read), the entry its own or shared with it
(hotlist.entry); and the hit must concern it: the camera is in its jurisdiction, or the entry
is its own. The alert carries only what those agreements give that center in clear.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta

from mutualaid.agencies import Agency
from mutualaid.audit import dissemination_audit, hit_alert_reason
from mutualaid.clock import Clock
from mutualaid.disclosure import FieldReport, clear_view
from mutualaid.events import record_key
from mutualaid.metrics import HITS, HITS_SUPPRESSED
from mutualaid.plates import normalize_plate, plate_key
from mutualaid.policy import Decision, Policy, distance_km
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    HIT_ALERT,
    SOURCE_EVENT,
    Codecs,
    SerializationContext,
)
from mutualaid.topics import AUDIT_DISSEMINATION, Kind, alerts_topic
from streams.router import Output

ALERT_NAMESPACE = uuid.UUID("3d0c8f5e-2b7a-5c4e-8f61-1a9b7c2d4e30")
# What the dedupe table remembers per (center, entry, plate): when the last alert's read was
# taken, and which read it was (so a replay of that very read is sent again, not suppressed).
Recent = MutableMapping[str, list]


class Hotlists:
    """Every hotlist entry, indexed by plate; entries kept as their encoded records.

    A million entries must fit a matcher comfortably, so an entry costs its Avro bytes and two
    dictionary slots; it is decoded only when a read hits it.
    """

    def __init__(self, codecs: Codecs) -> None:
        self._decode = codecs.deserializer(SOURCE_EVENT[Kind.HOTLIST_ENTRY])
        self._records: dict[str, tuple[str, bytes]] = {}  # entry key -> (plate, record)
        self._by_plate: dict[str, list[str]] = {}
        # Only entries whose folded plate differs from the plate; the rest are found in
        # _by_plate under the folded spelling, which saves a slot per entry.
        self._by_folded: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def apply(self, key: bytes, value: bytes | None, topic: str) -> None:
        """One record of a hotlist topic: an entry, a removal, or a tombstone."""
        entry_key = key.decode()
        self._forget(entry_key)
        if value is None:
            return
        event = self._decode(value, SerializationContext(topic))
        if event is None or event["body"] is None or not event["body"].get("plate"):
            return
        plate = normalize_plate(event["body"]["plate"])
        self._records[entry_key] = (plate, value)
        self._by_plate.setdefault(plate, []).append(entry_key)
        folded = plate_key(plate)
        if folded != plate:
            self._by_folded.setdefault(folded, []).append(entry_key)

    def candidates(self, plate: str, misreads: bool) -> list[tuple[dict, bool]]:
        """(entry event, exact plate?) for every entry the plate may match."""
        exact = self._by_plate.get(plate, [])
        keys = {k: True for k in exact}
        if misreads:
            folded = plate_key(plate)
            for k in (*self._by_plate.get(folded, []), *self._by_folded.get(folded, [])):
                keys.setdefault(k, False)
        out = []
        for k, is_exact in keys.items():
            event = self._decode(self._records[k][1], SerializationContext("hotlist"))
            assert event is not None
            out.append((event, is_exact))
        return out

    def _forget(self, entry_key: str) -> None:
        known = self._records.pop(entry_key, None)
        if known is None:
            return
        plate = known[0]
        for index, spelling in ((self._by_plate, plate), (self._by_folded, plate_key(plate))):
            keys = index.get(spelling)
            if keys and entry_key in keys:
                keys.remove(entry_key)
                if not keys:
                    del index[spelling]


def match_quality(read: dict, entry: dict, exact_plate: bool) -> str | None:
    """EXACT, STATE_UNCONFIRMED or MISREAD; None when the states say it is another vehicle."""
    read_state, entry_state = read.get("plate_state"), entry.get("plate_state")
    if read_state and entry_state and read_state.upper() != entry_state.upper():
        return None
    if not exact_plate:
        return "MISREAD"
    return "EXACT" if read_state and entry_state else "STATE_UNCONFIRMED"


def alert_id(center: str, read_event_id: str, entry_key: str) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{center}/{read_event_id}/{entry_key}"))


class Matcher:
    def __init__(
        self,
        policy: Policy,
        hotlists: Hotlists,
        codecs: Codecs,
        *,
        repeat_window: timedelta,
        misreads: bool,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self.hotlists = hotlists
        self.repeat_window = repeat_window
        self.misreads = misreads
        self.clock = clock
        self._encode_hit = codecs.serializer(HIT_ALERT)
        self._encode_audit = codecs.serializer(AUDIT_DISSEMINATION_SCHEMA)

    def match(self, read_event: dict, recent: Recent) -> list[Output]:
        """The alerts (and their audit records) one plate read raises."""
        envelope, read = read_event["envelope"], read_event["body"]
        if envelope["op"] != "UPSERT" or not read or not read.get("plate"):
            return []
        now = self.clock()
        plate = normalize_plate(read["plate"])
        candidates = self.hotlists.candidates(plate, self.misreads)
        if not candidates:
            return []
        read_grants = self._grants(read_event, now)
        outputs: list[Output] = []
        for entry_event, exact in candidates:
            entry = entry_event["body"]
            if entry.get("expires_at") is not None and entry["expires_at"] <= now:
                continue
            quality = match_quality(read, entry, exact)
            if quality is None:
                continue
            entry_grants = self._grants(entry_event, now)
            for center in self._centers(read_event, entry_event, read_grants, entry_grants):
                if self._repeat(center.ori, entry_event, plate, envelope, recent):
                    HITS_SUPPRESSED.labels(center=center.ori).inc()
                    continue
                outputs += self._alert(
                    center.ori,
                    quality,
                    read_event,
                    entry_event,
                    read_grants.get(center.ori),
                    entry_grants.get(center.ori),
                    now,
                )
                HITS.labels(
                    center=center.ori, reason=entry.get("reason") or "unknown", match=quality
                ).inc()
        return outputs

    def _grants(self, event: dict, now: datetime) -> dict[str, Decision]:
        """The partners the owner's agreements give this record to in full."""
        return {d.partner_ori: d for d in self.policy.decide(event, now) if d.outcome == "SHARED"}

    def _centers(
        self,
        read_event: dict,
        entry_event: dict,
        read_grants: dict[str, Decision],
        entry_grants: dict[str, Decision],
    ) -> list[Agency]:
        read_owner = read_event["envelope"]["source_ori"]
        entry_owner = entry_event["envelope"]["source_ori"]
        read = read_event["body"]
        centers = []
        for agency in self.policy.registry.agencies:
            if not agency.dispatch_center:
                continue
            may_see_read = agency.ori == read_owner or agency.ori in read_grants
            may_see_entry = agency.ori == entry_owner or agency.ori in entry_grants
            if not (may_see_read and may_see_entry):
                continue
            if agency.ori == entry_owner or in_jurisdiction(agency, read):
                centers.append(agency)
        return centers

    def _repeat(
        self, center: str, entry_event: dict, plate: str, envelope: dict, recent: Recent
    ) -> bool:
        """True if this center had an alert for this entry and plate within the window."""
        key = f"{center}|{record_key(entry_event['envelope']).decode()}|{plate}"
        taken = envelope["occurred_at"]
        last = recent.get(key)
        if last is not None:
            last_at = datetime.fromtimestamp(last[0] / 1000, UTC)
            if last[1] == envelope["event_id"]:
                return False  # the same read again (a replay): send the same alert again
            if abs(taken - last_at) < self.repeat_window:
                return True
        recent[key] = [int(taken.timestamp() * 1000), envelope["event_id"]]
        return False

    def _alert(
        self,
        center: str,
        quality: str,
        read_event: dict,
        entry_event: dict,
        read_grant: Decision | None,
        entry_grant: Decision | None,
        now: datetime,
    ) -> list[Output]:
        envelope, entry_envelope = read_event["envelope"], entry_event["envelope"]
        read, read_report = self._view(Kind.ALPR_READ, read_event["body"], read_grant)
        entry, entry_report = self._view(Kind.HOTLIST_ENTRY, entry_event["body"], entry_grant)
        entry_key = record_key(entry_envelope).decode()
        hit = {
            "alert_id": alert_id(center, envelope["event_id"], entry_key),
            "center_ori": center,
            "match": quality,
            "read_event_id": envelope["event_id"],
            "read_source_ori": envelope["source_ori"],
            "read_record_id": envelope["record_id"],
            "read_occurred_at": envelope["occurred_at"],
            "read_ingested_at": envelope["ingested_at"],
            "read": read,
            "entry_owner_ori": entry_envelope["source_ori"],
            "entry_id": entry_envelope["record_id"],
            "entry": entry,
            "withheld_fields": [f"read.{p}" for p in read_report.withheld]
            + [f"entry.{p}" for p in entry_report.withheld],
            "matched_at": now,
        }
        topic = alerts_topic(center)
        outputs = [
            Output(
                topic, hit["alert_id"].encode(), self._encode_hit(hit, SerializationContext(topic))
            )
        ]
        # Sharing a record by alert is a dissemination like any other: audited per record.
        for event, grant, report in (
            (read_event, read_grant, read_report),
            (entry_event, entry_grant, entry_report),
        ):
            if grant is not None:
                outputs.append(self._audit(event["envelope"], grant, report, hit["alert_id"], now))
        return outputs

    def _view(self, kind: Kind, body: dict, grant: Decision | None) -> tuple[dict, FieldReport]:
        """The body as the center may see it in clear: whole if its own, else per agreement."""
        if grant is None:
            return body, FieldReport()
        actions = grant.actions  # combined over every agreement granting it
        return clear_view(body, actions)

    def _audit(
        self, envelope: dict, grant: Decision, report: FieldReport, alert: str, now: datetime
    ) -> Output:
        assert grant.agreement is not None
        # A clear view hashes and encrypts nothing: its report lists no such fields.
        record = dissemination_audit(
            envelope,
            report,
            partner_ori=grant.partner_ori,
            decision="SHARED",
            agreement_id=grant.agreement.id,
            agreement_version=grant.agreement.version,
            agreements=[{"id": i, "version": v} for i, v in grant.agreement_refs],
            rules=grant.rule_refs,
            reasons=[*grant.steps, hit_alert_reason(alert)],
            decided_at=now,
        )
        value = self._encode_audit(record, SerializationContext(AUDIT_DISSEMINATION))
        return Output(AUDIT_DISSEMINATION, record_key(envelope), value)


def in_jurisdiction(agency: Agency, read: dict) -> bool:
    where = agency.jurisdiction
    lat, lon = read.get("latitude"), read.get("longitude")
    if where is None or lat is None or lon is None:
        return False
    return distance_km((lat, lon), (where.latitude, where.longitude)) <= where.radius_km
