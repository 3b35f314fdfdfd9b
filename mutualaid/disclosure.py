"""Turning one decision into what the partner receives: the shared event, and what left in clear.

Applied on the router for every SHARED or POINTER decision. A pointer carries no body, no
labels and an opaque record reference, with the keyed hashes it may be found by
(``mutualaid.pointers``). Field actions:

- ``drop``: the value is withheld (null, or an empty list) and the path listed as withheld.
- ``mask``: text shown as ``*****6789`` (the last four characters), for a human to recognise.
- ``hash``: a keyed hash (HMAC-SHA256 under the region's hash key, hex) of the value's letters
  and digits (``mutualaid.text.blind_form``): equal values match across records and agencies
  holding the same key, the value itself is not revealed. Unkeyed hashes of dates of birth or
  plates would be reversed by trying every value, hence the key.
- ``encrypt``: sealed for the partner alone (``mutualaid.crypto``), null in the body.
- ``encrypt_indexed``: sealed as by ``encrypt``, with its keyed hash left in the body: a blind
  index, by which a partner matches the value exactly without opening it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mutualaid import fieldpaths
from mutualaid.agencies import Registry
from mutualaid.crypto import KeyAgreements, PublicKey, Sealed, SealedField, seal_fields
from mutualaid.errors import UsageError
from mutualaid.pointers import FoundBy, match_keys, record_ref
from mutualaid.policy import Decision, FieldAction
from mutualaid.text import blind_form

# What json.dumps(value, default=str) gives, without building an encoder per call (as dumps
# does for any argument besides the value).
_FIELD_JSON = json.JSONEncoder(default=str)


class MissingKey(UsageError):
    """An agreement encrypts or hashes, but the key it needs is not configured."""

    prefix = "cannot start: "


@dataclass
class FieldReport:
    in_clear: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)
    encrypted: list[str] = field(default_factory=list)


def pointer_found_by(decision: Decision) -> list[FoundBy]:
    """What a pointer may be found by: only what every contributing agreement allows (the
    most protective combination: each search key makes the record discoverable)."""
    allowed = [set(a.pointer_found_by) for a in decision.agreements]
    return sorted(set[FoundBy].intersection(*allowed)) if allowed else []


def mask(text: str) -> str:
    return "*" * max(len(text) - 4, 0) + text[-4:] if len(text) > 4 else "*" * len(text)


def keyed_hash(key: bytes, text: str) -> str:
    """HMAC-SHA256 of the text's ``blind_form``, hex: the blind index a partner searches by."""
    return hmac.new(key, blind_form(text).encode(), hashlib.sha256).hexdigest()


def copy_tree(value: Any) -> Any:
    """A copy of a decoded record: its dicts and lists new, its leaves shared (strings,
    numbers, datetimes, bytes: immutable). ``copy.deepcopy`` does the same with a memo of every
    object it meets, and was a fifth of routing an RMS record to two partners."""
    if isinstance(value, dict):
        return {k: copy_tree(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [copy_tree(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def clear_paths(value: Any, prefix: str = "") -> list[str]:
    """Concrete paths of every non-empty value left in a body."""
    found: list[str] = []
    _collect_clear(value, prefix, found)
    return found


def _collect_clear(value: Any, prefix: str, found: list[str]) -> None:
    # Scalars are appended here, not by a call each: a body is mostly scalars, and this runs
    # for every share.
    if isinstance(value, dict):
        items: Any = ((f"{prefix}.{k}" if prefix else k, v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    else:
        if value is not None:
            found.append(prefix)
        return
    for path, item in items:
        if isinstance(item, (dict, list)):
            _collect_clear(item, path, found)
        elif item is not None:
            found.append(path)


def new_disclosure(
    partner_ori: str, agreement: tuple[str, int], tier: str = "FULL"
) -> dict[str, Any]:
    """A ``mutualaid.Disclosure`` with nothing withheld, masked, hashed or sealed yet."""
    return {
        "partner_ori": partner_ori,
        "agreement_id": agreement[0],
        "agreement_version": agreement[1],
        "tier": tier,
        "contact": None,
        "withheld_fields": [],
        "masked_fields": [],
        "hashed_fields": [],
        "sealed": None,
        "retain_until": None,
        "revision": 0,
        "match_keys": [],
    }


def pointer_envelope(envelope: dict[str, Any], hash_key: bytes) -> dict[str, Any]:
    """The envelope a pointer travels in: the opaque reference for the record id, no labels
    (a label such as juvenile is itself what the owner protects), no source position."""
    ref = record_ref(hash_key, envelope["source_ori"], envelope["kind"], envelope["record_id"])
    return {**envelope, "record_id": ref, "labels": [], "source_position": None}


def _need(hash_key: bytes | None, agreement_id: str, path: str) -> bytes:
    if hash_key is None:
        raise MissingKey(
            f"agreement {agreement_id} hashes {path} but no hash key is "
            "configured; run `mutualaid keys hash-key`"
        )
    return hash_key


def disclose(
    event: dict[str, Any],
    decision: Decision,
    actions: Mapping[str, FieldAction],
    *,
    registry: Registry,
    public_key: PublicKey | None,
    hash_key: bytes | None,
    key_agreements: KeyAgreements | None = None,
    treated: Treated | None = None,
) -> tuple[dict[str, Any], FieldReport]:
    """The shared event for this decision, and the report of what happened to each field.

    ``actions`` are the decision's combined field actions (``decision.actions`` on the router),
    applied in their order: deepest path first, so a field inside an encrypted one is treated
    before the encrypted one is sealed. ``treated`` is the event's body already treated
    (``treat``), if the caller has it: used only if it was made from this body with these
    actions. What the disclosure says and what it seals are the partner's own either way.
    """
    envelope = {**event["envelope"], "source_position": None}  # positions are the owner's business
    ref = decision.agreement_ref
    assert ref is not None and decision.shares
    agreements = decision.agreement_names
    retention = decision.retention
    retain_until = None if retention is None else envelope["occurred_at"] + retention
    disclosure = new_disclosure(
        decision.partner_ori,
        ref,
        "FULL" if decision.outcome == "SHARED" else "POINTER",
    )
    disclosure["retain_until"] = retain_until
    if decision.outcome == "POINTER":
        region_key = _need(hash_key, ref[0], "a pointer's reference")
        disclosure["contact"] = registry.get(envelope["source_ori"]).contact or None
        disclosure["match_keys"] = match_keys(event["body"], pointer_found_by(decision), region_key)
        shared: dict[str, Any] = {
            "envelope": pointer_envelope(envelope, region_key),
            "disclosure": disclosure,
        }
        return shared | {"body": None}, FieldReport()
    if event["body"] is None:
        disclosure["contact"] = registry.get(envelope["source_ori"]).contact or None
        shared = {"envelope": envelope, "disclosure": disclosure, "body": None}
        return shared, FieldReport()
    if treated is None or not treated.fits(event["body"], actions):
        treated = treat(event["body"], actions, hash_key=hash_key, agreements=agreements)
    report = treated.report
    if treated.to_seal:
        if public_key is None:
            raise MissingKey(
                f"agreement {agreements} encrypts fields for "
                f"{decision.partner_ori}, which has no public key installed"
            )
        sealed = seal_fields(
            treated.to_seal,
            event_id=envelope["event_id"],
            partner=public_key,
            agreements=key_agreements,
        )
        disclosure["sealed"] = sealed_to_avro(sealed)
    disclosure["withheld_fields"] = report.withheld
    disclosure["masked_fields"] = report.masked
    disclosure["hashed_fields"] = report.hashed
    return {"envelope": envelope, "disclosure": disclosure, "body": treated.body}, report


class Treated(NamedTuple):
    """A body after one set of field actions, before anything is sealed for a partner: the
    same for every partner the same actions apply to, so a router sharing one record with
    several treats it once (``disclose(treated=)``). Not to be changed: partners share it. (A
    tuple: the router makes one per record it shares.)"""

    source: dict[str, Any]  # the body treated (held, so ``is`` is a sound test)
    actions: Mapping[str, FieldAction]
    body: dict[str, Any]
    report: FieldReport
    to_seal: dict[str, bytes]  # concrete path -> the value, to seal for each partner

    def fits(self, source: dict[str, Any] | None, actions: Mapping[str, FieldAction]) -> bool:
        """Whether this is ``source`` treated with ``actions``."""
        return source is self.source and actions == self.actions


def treat(
    source: dict[str, Any],
    actions: Mapping[str, FieldAction],
    *,
    hash_key: bytes | None,
    agreements: str,
) -> Treated:
    """Apply ``actions`` to a copy of the body ``source`` (no copy if there are none), in their
    order; ``agreements`` names them in errors (a hash needs the hash key)."""
    report = FieldReport()
    if not actions:
        report.in_clear = clear_paths(source)
        return Treated(source, actions, source, report, {})
    body = copy_tree(source)  # only a body actions change is copied
    to_seal: dict[str, bytes] = {}
    for path, action in actions.items():
        for concrete, holder, key in list(fieldpaths.leaves(body, path)):
            value = holder[key]
            if value is None or value == []:
                continue
            if action == FieldAction.DROP:
                holder[key] = [] if isinstance(value, list) else None
                report.withheld.append(concrete)
            elif action == FieldAction.MASK:
                holder[key] = mask(value)
                report.masked.append(concrete)
            elif action == FieldAction.HASH:
                holder[key] = keyed_hash(_need(hash_key, agreements, path), value)
                report.hashed.append(concrete)
            elif action in (FieldAction.ENCRYPT, FieldAction.ENCRYPT_INDEXED):
                to_seal[concrete] = _FIELD_JSON.encode(value).encode()
                holder[key] = [] if isinstance(value, list) else None
                report.encrypted.append(concrete)
                if action == FieldAction.ENCRYPT_INDEXED:
                    holder[key] = keyed_hash(_need(hash_key, agreements, path), value)
                    report.hashed.append(concrete)
    shown_otherwise = set(report.masked) | set(report.hashed)
    report.in_clear = [p for p in clear_paths(body) if p not in shown_otherwise]
    return Treated(source, actions, body, report, to_seal)


def clear_view(
    body: dict[str, Any], actions: Mapping[str, FieldAction]
) -> tuple[dict[str, Any], FieldReport]:
    """The body as shown to someone who holds no keys (a hit alert on a dispatch console).

    Masked fields stay masked; every field an agreement drops, hashes or encrypts is withheld,
    since nothing on the way to a console could open it.
    """
    view = copy_tree(body)
    report = FieldReport()
    for path, action in actions.items():
        for concrete, holder, key in list(fieldpaths.leaves(view, path)):
            value = holder[key]
            if value is None or value == []:
                continue
            if action == FieldAction.MASK:
                holder[key] = mask(value)
                report.masked.append(concrete)
            else:
                holder[key] = [] if isinstance(value, list) else None
                report.withheld.append(concrete)
    masked = set(report.masked)
    report.in_clear = [p for p in clear_paths(view) if p not in masked]
    return view, report


def sealed_to_avro(sealed: Sealed) -> dict[str, Any]:
    return {
        "key_id": sealed.key_id,
        "ephemeral_public": sealed.ephemeral_public,
        "wrap_nonce": sealed.wrap_nonce,
        "wrapped_key": sealed.wrapped_key,
        "fields": [
            {"path": f.path, "nonce": f.nonce, "ciphertext": f.ciphertext} for f in sealed.fields
        ],
    }


def sealed_from_avro(record: dict[str, Any]) -> Sealed:
    return Sealed(
        key_id=record["key_id"],
        ephemeral_public=record["ephemeral_public"],
        wrap_nonce=record["wrap_nonce"],
        wrapped_key=record["wrapped_key"],
        fields=tuple(SealedField(f["path"], f["nonce"], f["ciphertext"]) for f in record["fields"]),
    )


def restore(body: dict[str, Any], values: dict[str, bytes]) -> dict[str, Any]:
    """Put decrypted values back at their concrete paths (the partner's side)."""
    restored: dict[str, Any] = copy_tree(body)
    for path, raw in values.items():
        fieldpaths.set_concrete(restored, path, json.loads(raw))
    return restored
