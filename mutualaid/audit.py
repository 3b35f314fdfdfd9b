"""The dissemination audit record: who was given which record, under what, and what left in clear.

The router (a share, a denial, a withdrawal) and the matcher (a record sent in a hit alert)
both write one per (event, partner) to ``audit.dissemination``; this builds it for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mutualaid.disclosure import FieldReport

# The last reason of a matcher's audit record: the record left in a hit alert, not a share.
# The transparency report tells hits from shares by it.
HIT_ALERT_REASON = "sent in hit alert "


def hit_alert_reason(alert_id: str) -> str:
    return HIT_ALERT_REASON + alert_id


def is_hit_alert(reasons: list[str]) -> bool:
    """Whether an audit record with these reasons is of a record sent in a hit alert."""
    return bool(reasons) and reasons[-1].startswith(HIT_ALERT_REASON)


def dissemination_audit(
    envelope: Mapping[str, Any], report: FieldReport, **decision: Any
) -> dict[str, Any]:
    """A ``mutualaid.DisseminationAudit`` record for the event with ``envelope``.

    ``decision`` holds the schema's other fields as they are (partner_ori, decision,
    agreement_id, agreement_version, reasons, decided_at, ...); the fields lists come from
    ``report``, so what the audit says left in clear is what the disclosure did.
    """
    return {
        "event_id": envelope["event_id"],
        "source_ori": envelope["source_ori"],
        "kind": envelope["kind"],
        "record_id": envelope["record_id"],
        "version": envelope["version"],
        **decision,
        "fields_in_clear": report.in_clear,
        "fields_withheld": report.withheld,
        "fields_masked": report.masked,
        "fields_hashed": report.hashed,
        "fields_encrypted": report.encrypted,
    }
