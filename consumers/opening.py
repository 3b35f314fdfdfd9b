"""Opening what a partner sealed for this agency: one function for the projector and import."""

from __future__ import annotations

from mutualaid.crypto import PrivateKeyring
from mutualaid.disclosure import restore, sealed_from_avro


def open_shared(event: dict, keyring: PrivateKeyring, keep_sealed: bool) -> dict:
    """The shared event with its sealed fields decrypted back into the body, or, keeping them
    sealed, as it came once they are shown to open. Raises DecryptionError (wrong key, or the
    record was altered): such a record is never indexed half."""
    sealed = event["disclosure"]["sealed"]
    if sealed is None or event["body"] is None:
        return event
    values = keyring.open_fields(sealed_from_avro(sealed), event_id=event["envelope"]["event_id"])
    if keep_sealed:
        return event
    # Opened fields are in clear now: no longer sealed, nor matched by their hash.
    disclosure = event["disclosure"]
    hashed = [p for p in disclosure["hashed_fields"] if p not in values]
    return {
        **event,
        "disclosure": {**disclosure, "sealed": None, "hashed_fields": hashed},
        "body": restore(event["body"], values),
    }
