"""An agency's own records as its own index holds them, beside what partners share with it.

The projector reads the agency's own ``src.<ori>.*`` topics too: no agreement is needed for an
agency to search its own data, so the router (which never routes a record back to its owner)
is not involved. Each source event is given the disclosure a shared event carries, so the
index keeps both alike, one search returns both, and the same search log names them: the
agreement is ``OWN_RECORDS`` (no agreement id can be, see ``mutualaid.policy``), the tier FULL,
nothing withheld, masked, hashed or sealed, and no retention but the agency's own.

A newer version replaces the own copy and a DELETE leaves a tombstone, as for a partner's copy.
A version labelled sealed or expunged is indexed as withdrawn too: a court's order reaches the
agency's own shared search as it reaches its partners' (the record stays in the agency's RMS).
"""

from __future__ import annotations

from mutualaid.disclosure import new_disclosure
from mutualaid.errors import MutualaidError
from mutualaid.labels import WITHDRAWING

# The agreement_id of an own record: parentheses keep it apart from every agreement's id.
OWN_RECORDS = "(own)"


class NotOwn(MutualaidError, ValueError):
    """A source event on an agency's own topic that names another agency as its owner."""


def own_copy(event: dict, agency_ori: str) -> dict:
    """The source event ``event`` of ``agency_ori`` as a shared event addressed to itself."""
    envelope = event["envelope"]
    if envelope["source_ori"] != agency_ori:
        raise NotOwn(
            f"names {envelope['source_ori']} as its owner but is on {agency_ori}'s own topic"
        )
    body = event["body"]
    if set(envelope["labels"]) & WITHDRAWING:
        envelope, body = {**envelope, "op": "DELETE"}, None
    # Version 0: no agreement stands behind it (the agency's own data needs none).
    disclosure = new_disclosure(agency_ori, (OWN_RECORDS, 0))
    return {"envelope": envelope, "disclosure": disclosure, "body": body}
