"""Whole-record sealing of share topics: only the partner can read what the router shares.

With ``share_sealing`` on, each record on ``share.<partner>.<kind>`` is a ``mutualaid.SealedShare``:
the partner's whole shared event (its usual ``Shared*Event`` bytes, field-level encryption and
all) sealed with AES-256-GCM, beside the few fields that must stay in clear (``CLEAR``: what the
record is, whose, for whom, which copy; never names, plates, places or narrative). Those clear
fields, the key ids and the data key id are the associated data, so a clear part moved onto
another record's body, or edited, does not open.

Envelope encryption, as KMS-style systems do it, so sealing costs one AES-GCM per record:

- The router (``Sealer``) keeps one data key per partner, wrapped once to the partner's newest
  X25519 public key (``mutualaid.crypto.wrap_key``: one key agreement per data key, not per
  record); the wrap travels with every record, so nothing else must be fetched to open it.
- A data key is replaced after ``rotate_seconds``, after ``MAX_RECORDS_PER_DATA_KEY`` records
  (random 96-bit nonces stay far from collision), and when the partner's newest public key
  changes (looked at every ``KEY_CHECK_SECONDS``).
- The partner (``Unsealer``) unwraps each data key once with its private keys and keeps the
  last ``OPENED_KEYS_KEPT`` of them. Data keys live only in memory; only wraps go on a topic.

Sealing hides what a record says from whoever can read the topic without the partner's key;
it does not prove who wrote it (anyone with the public key can seal): that is the audit's and
the ACLs' job.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mutualaid.crypto import DecryptionError, PrivateKeyring, PublicKey, WrappedKey, wrap_key

SEALED_SHARE = "mutualaid.SealedShare"
VERSION = b"mutualaid-seal-v1"
NONCE_BYTES = 12
MAX_RECORDS_PER_DATA_KEY = 1 << 24
KEY_CHECK_SECONDS = 60.0
OPENED_KEYS_KEPT = 256
# What stays in clear: enough to key, compact, order and trace a record without opening it.
CLEAR = (
    "event_id",
    "source_ori",
    "kind",
    "op",
    "record_id",
    "version",
    "revision",
    "partner_ori",
    "tier",
)
_BOUND = (*CLEAR, "key_id", "data_key_id")

PublicKeys = Callable[[str], PublicKey | None]


class UnsealError(DecryptionError):
    """A sealed share record that does not open for this agency; the message says why."""


def clear_part(shared: Mapping) -> dict:
    """The fields of a shared event that stay in clear when it is sealed."""
    envelope, disclosure = shared["envelope"], shared["disclosure"]
    return {
        **{k: envelope[k] for k in ("event_id", "source_ori", "kind", "op", "record_id")},
        "version": envelope["version"],
        "revision": disclosure["revision"],
        "partner_ori": disclosure["partner_ori"],
        "tier": disclosure["tier"],
    }


def _body_aad(record: Mapping) -> bytes:
    # Each value length-prefixed, so no two different clear parts give the same bytes (a record
    # id may hold any character), and cheaper than JSON on every record.
    values = [str(record[k]) for k in _BOUND]
    bound = "".join([f"{len(v)}:{v}" for v in values])
    return VERSION + b"|body|" + bound.encode()


def _wrap_aad(partner_ori: str, key_id: str, data_key_id: str) -> bytes:
    return b"|".join(
        [VERSION, b"wrap", partner_ori.encode(), key_id.encode(), data_key_id.encode()]
    )


@dataclass
class _DataKey:
    data_key_id: str
    aead: AESGCM
    wrap: WrappedKey
    expires: float
    uses: int = 0


class Sealer:
    """The router's side: seals shared events, one cached data key per partner."""

    def __init__(
        self,
        public_key: PublicKeys,
        *,
        rotate_seconds: float,
        required: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.required = required
        self._public_key = public_key
        self._rotate_seconds = rotate_seconds
        self._clock = clock
        self._publics: dict[str, tuple[float, PublicKey | None]] = {}
        self._data_keys: dict[str, _DataKey] = {}

    def public_key(self, partner_ori: str) -> PublicKey | None:
        """The partner's newest public key, looked up again every KEY_CHECK_SECONDS."""
        now = self._clock()
        checked = self._publics.get(partner_ori)
        if checked is None or now >= checked[0]:
            checked = (now + KEY_CHECK_SECONDS, self._public_key(partner_ori))
            self._publics[partner_ori] = checked
        return checked[1]

    def seal(self, shared: Mapping, body: bytes) -> dict | None:
        """The ``mutualaid.SealedShare`` of ``shared`` (whose encoded bytes are ``body``), or
        None if its partner has no public key."""
        clear = clear_part(shared)
        data_key = self._data_key(clear["partner_ori"])
        if data_key is None:
            return None
        data_key.uses += 1
        record = {
            **clear,
            "key_id": data_key.wrap.key_id,
            "data_key_id": data_key.data_key_id,
            "ephemeral_public": data_key.wrap.ephemeral_public,
            "wrap_nonce": data_key.wrap.nonce,
            "wrapped_key": data_key.wrap.wrapped,
            "nonce": os.urandom(NONCE_BYTES),
        }
        record["ciphertext"] = data_key.aead.encrypt(record["nonce"], body, _body_aad(record))
        return record

    def _data_key(self, partner_ori: str) -> _DataKey | None:
        public = self.public_key(partner_ori)
        if public is None:
            self._data_keys.pop(partner_ori, None)
            return None
        current = self._data_keys.get(partner_ori)
        if (
            current is None
            or self._clock() >= current.expires
            or current.uses >= MAX_RECORDS_PER_DATA_KEY
            or current.wrap.key_id != public.key_id
        ):
            key = AESGCM.generate_key(bit_length=256)
            data_key_id = os.urandom(8).hex()
            wrap = wrap_key(key, public, _wrap_aad(partner_ori, public.key_id, data_key_id))
            expires = self._clock() + self._rotate_seconds
            current = _DataKey(data_key_id, AESGCM(key), wrap, expires)
            self._data_keys[partner_ori] = current
        return current


class Unsealer:
    """The partner's side: opens sealed share records with the agency's private keys."""

    def __init__(self, keyring: PrivateKeyring) -> None:
        self.keyring = keyring
        self._opened: OrderedDict[tuple, AESGCM] = OrderedDict()

    def open(self, record: Mapping) -> bytes:
        """The sealed body's bytes, or UnsealError naming what did not match."""
        ori = self.keyring.agency_ori
        if record["partner_ori"] != ori:
            raise UnsealError(f"sealed for {record['partner_ori']}, not for {ori}")
        aead = self._aead(record)
        try:
            return aead.decrypt(record["nonce"], record["ciphertext"], _body_aad(record))
        except (InvalidTag, ValueError):
            raise UnsealError(
                f"the body does not open under data key {record['data_key_id']}: the record "
                "(its clear part or its body) was altered"
            ) from None

    def _aead(self, record: Mapping) -> AESGCM:
        wrap = WrappedKey(
            record["key_id"],
            record["ephemeral_public"],
            record["wrap_nonce"],
            record["wrapped_key"],
        )
        # The whole wrap is the cache key: a record naming a known data key id with other
        # wrap bytes is unwrapped (and refused) on its own, never served the cached key.
        cache_key = (record["data_key_id"], wrap)
        aead = self._opened.get(cache_key)
        if aead is not None:
            self._opened.move_to_end(cache_key)
            return aead
        aad = _wrap_aad(self.keyring.agency_ori, wrap.key_id, record["data_key_id"])
        try:
            aead = AESGCM(self.keyring.unwrap_key(wrap, aad))
        except DecryptionError:
            raise UnsealError(
                f"its data key (wrapped to key {wrap.key_id}) does not unwrap with "
                f"{self.keyring.agency_ori}'s keys {self.keyring.key_ids}: not sealed to this "
                "agency's key, or altered"
            ) from None
        self._opened[cache_key] = aead
        if len(self._opened) > OPENED_KEYS_KEPT:
            self._opened.popitem(last=False)
        return aead
