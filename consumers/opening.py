"""Opening what a partner sealed for this agency: for the projector, export and import."""

from __future__ import annotations

from mutualaid.crypto import PrivateKeyring
from mutualaid.disclosure import restore, sealed_from_avro
from mutualaid.sealing import CLEAR, SEALED_SHARE, Unsealer, UnsealError, clear_part
from mutualaid.serde import SHARED_EVENT, Codecs, DeserializationError, SerializationContext
from mutualaid.topics import RECORD_KINDS, Kind


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


class ShareReader:
    """Share-topic values into shared events, whether the router sealed them whole or not.

    A sealed record (``mutualaid.SealedShare``) is opened with the agency's keys, and what it
    holds must be the record its clear part names: the clear part is then safe to trust.
    """

    def __init__(self, codecs: Codecs, keyring: PrivateKeyring) -> None:
        self._decode = {kind: codecs.deserializer(SHARED_EVENT[kind]) for kind in RECORD_KINDS}
        self._sealed = codecs.deserializer(SEALED_SHARE)
        self._unsealer = Unsealer(keyring)

    def decode(self, kind: Kind, value: bytes, ctx: SerializationContext) -> dict:
        """The shared event; DeserializationError if the bytes are not one, UnsealError if a
        sealed one does not open for this agency."""
        decode = self._decode[kind]
        if decode.writer_name(value, ctx) != SEALED_SHARE:
            return _record(decode(value, ctx), ctx)
        sealed = _record(self._sealed(value, ctx), ctx)
        event = _record(decode(self._unsealer.open(sealed), ctx), ctx)
        inside = clear_part(event)
        differ = sorted(k for k in CLEAR if inside[k] != sealed[k])
        if differ:
            raise UnsealError(
                f"the sealed body is another record than its clear part names ({', '.join(differ)})"
            )
        return event


def _record(event: dict | None, ctx: SerializationContext) -> dict:
    if event is None:  # a null value is a tombstone, which callers skip before decoding
        raise DeserializationError("a tombstone is not a shared event", ctx)
    return event
