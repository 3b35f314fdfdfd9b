"""Field-level encryption for partners: seal on the router, open only with the partner's key.

The one API is ``seal_fields`` / ``open_fields`` (in the spirit of ``cryptography.fernet``):
callers never handle nonces, associated data or raw keys.

- Each (event, partner) gets a fresh 256-bit data key. Every field is sealed with AES-256-GCM
  under it, with associated data binding the event id, the partner and the field's concrete path,
  so a ciphertext moved to another event, partner or field fails to open.
- The data key is wrapped to the partner's X25519 public key (ephemeral-static ECDH, HKDF-SHA256,
  AES-256-GCM, associated data binding the event), so the router holds only public keys and only
  the partner can unwrap. The router (``KeyAgreements``) keeps one ephemeral agreement per
  partner key for ``seal_key_rotation_seconds`` (and at most ``MAX_WRAPS_PER_AGREEMENT``
  wraps), as the whole-record sealer keeps its data keys: the ECDH was a fifth of routing an
  encrypted RMS record, and records look as before, so every reader opens them unchanged. The
  partner (``PrivateKeyring``) remembers the key-encryption keys of the last agreements it
  derived, so it too computes one ECDH per agreement instead of per record.
- Keys carry ids. Rotation the MultiFernet way: the newest public key writes, every private key
  the partner still holds can read. Every failure to open is one opaque ``DecryptionError``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mutualaid.errors import MutualaidError, UsageError
from mutualaid.topics import check_ori

VERSION = b"mutualaid-fle-v1"
NONCE_BYTES = 12
# Random 96-bit nonces under one key-encryption key stay far from collision well below 2^32.
MAX_WRAPS_PER_AGREEMENT = 1 << 24
KEKS_KEPT = 256


class DecryptionError(MutualaidError):
    """A sealed field could not be opened: wrong key, tampered data, or moved ciphertext."""


class KeyFileError(UsageError):
    """A key file is missing or unreadable; the message says which and what to do."""


@dataclass(frozen=True)
class PublicKey:
    agency_ori: str
    key_id: str
    key: X25519PublicKey


@dataclass(frozen=True)
class SealedField:
    path: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Sealed:
    """What travels with the event: the wrapped data key and the sealed fields."""

    key_id: str
    ephemeral_public: bytes
    wrap_nonce: bytes
    wrapped_key: bytes
    fields: tuple[SealedField, ...]


def _field_aad(event_id: str, partner_ori: str, path: str) -> bytes:
    return b"|".join([VERSION, b"field", event_id.encode(), partner_ori.encode(), path.encode()])


def _wrap_aad(event_id: str, partner_ori: str, key_id: str) -> bytes:
    return b"|".join([VERSION, b"wrap", event_id.encode(), partner_ori.encode(), key_id.encode()])


def _kek(shared_secret: bytes, ephemeral_public: bytes, key_id: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public,
        info=VERSION + b"|kek|" + key_id.encode(),
    ).derive(shared_secret)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal_fields(
    values: dict[str, bytes],
    *,
    event_id: str,
    partner: PublicKey,
    agreements: KeyAgreements | None = None,
) -> Sealed:
    """Seal each (concrete path -> plaintext) for ``partner`` and this event only: a fresh data
    key, wrapped under ``agreements``' current agreement with the partner's key (a new one if
    none is given)."""
    raw_key = AESGCM.generate_key(bit_length=256)
    data_key = AESGCM(raw_key)
    fields = []
    for path, plaintext in values.items():
        nonce = os.urandom(NONCE_BYTES)
        aad = _field_aad(event_id, partner.agency_ori, path)
        fields.append(SealedField(path, nonce, data_key.encrypt(nonce, plaintext, aad)))
    aad = _wrap_aad(event_id, partner.agency_ori, partner.key_id)
    agreement = agreements.current(partner) if agreements is not None else None
    wrap = wrap_key(raw_key, partner, aad, agreement)
    return Sealed(partner.key_id, wrap.ephemeral_public, wrap.nonce, wrap.wrapped, tuple(fields))


@dataclass
class _Agreement:
    """One ephemeral-static ECDH with a partner's key: the key-encryption key it gives."""

    key_id: str
    ephemeral_public: bytes
    kek: AESGCM
    expires: float
    uses: int = 0


def _agree(partner: PublicKey, expires: float) -> _Agreement:
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw(ephemeral.public_key())
    kek = _kek(ephemeral.exchange(partner.key), ephemeral_public, partner.key_id)
    return _Agreement(partner.key_id, ephemeral_public, AESGCM(kek), expires)


class KeyAgreements:
    """The router's agreements, one per partner: renewed after ``rotate_seconds``, after
    MAX_WRAPS_PER_AGREEMENT wraps, and as soon as the partner's newest key is another. They
    live only in memory; what travels is each record's ephemeral public key."""

    def __init__(self, rotate_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rotate_seconds, self._clock = rotate_seconds, clock
        self._current: dict[str, _Agreement] = {}

    def current(self, partner: PublicKey) -> _Agreement:
        agreement = self._current.get(partner.agency_ori)
        now = self._clock()
        if (
            agreement is None
            or agreement.key_id != partner.key_id
            or now >= agreement.expires
            or agreement.uses >= MAX_WRAPS_PER_AGREEMENT
        ):
            agreement = _agree(partner, now + self._rotate_seconds)
            self._current[partner.agency_ori] = agreement
        agreement.uses += 1
        return agreement


@dataclass(frozen=True)
class WrappedKey:
    """A data key only the partner can unwrap, and which of its keys it is wrapped to."""

    key_id: str
    ephemeral_public: bytes
    nonce: bytes
    wrapped: bytes


def wrap_key(
    data_key: bytes, partner: PublicKey, aad: bytes, agreement: _Agreement | None = None
) -> WrappedKey:
    """``data_key`` wrapped to the partner's public key, bound to ``aad``: under ``agreement``
    (``KeyAgreements.current``), else under a new one (one ECDH)."""
    agreement = agreement or _agree(partner, 0.0)
    nonce = os.urandom(NONCE_BYTES)
    wrapped = agreement.kek.encrypt(nonce, data_key, aad)
    return WrappedKey(partner.key_id, agreement.ephemeral_public, nonce, wrapped)


class PrivateKeyring:
    """The private keys one agency holds, by key id: every one of them can still read."""

    def __init__(self, agency_ori: str, keys: dict[str, X25519PrivateKey]) -> None:
        self.agency_ori = check_ori(agency_ori)
        self._keys = keys
        # (key id, ephemeral public key) -> the KEK they derive: records of one agreement
        # (``KeyAgreements``) cost one ECDH, not one each. Derived, so safe to remember; the
        # search API opens records from several threads.
        self._keks: OrderedDict[tuple[str, bytes], AESGCM] = OrderedDict()
        self._keks_lock = threading.Lock()

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def open_fields(self, sealed: Sealed, *, event_id: str) -> dict[str, bytes]:
        """The plaintext of every sealed field, or DecryptionError; nothing half-opened."""
        wrap = WrappedKey(
            sealed.key_id, sealed.ephemeral_public, sealed.wrap_nonce, sealed.wrapped_key
        )
        data_key = self.unwrap_key(wrap, _wrap_aad(event_id, self.agency_ori, sealed.key_id))
        try:
            return {
                f.path: AESGCM(data_key).decrypt(
                    f.nonce, f.ciphertext, _field_aad(event_id, self.agency_ori, f.path)
                )
                for f in sealed.fields
            }
        except (InvalidTag, ValueError):
            raise DecryptionError("cannot open sealed fields") from None

    def unwrap_key(self, wrap: WrappedKey, aad: bytes) -> bytes:
        """The data key of ``wrap``, or DecryptionError (not our key, or altered)."""
        try:
            return self._kek_of(wrap).decrypt(wrap.nonce, wrap.wrapped, aad)
        except (InvalidTag, ValueError):
            raise DecryptionError("cannot open sealed fields") from None

    def _kek_of(self, wrap: WrappedKey) -> AESGCM:
        known = (wrap.key_id, bytes(wrap.ephemeral_public))
        with self._keks_lock:
            kek = self._keks.get(known)
            if kek is not None:
                self._keks.move_to_end(known)
                return kek
        key = self._keys.get(wrap.key_id)
        if key is None:
            raise DecryptionError("cannot open sealed fields")
        peer = X25519PublicKey.from_public_bytes(wrap.ephemeral_public)  # ValueError if bad
        kek = AESGCM(_kek(key.exchange(peer), wrap.ephemeral_public, wrap.key_id))
        with self._keks_lock:
            self._keks[known] = kek
            if len(self._keks) > KEKS_KEPT:
                self._keks.popitem(last=False)
        return kek


# --- key files -------------------------------------------------------------------------------
# Public keys: <public_dir>/<ori>.<key_id>.pub (PEM). Private keys: <private_dir>/<ori>/<key_id>.pem
# (PEM, PKCS8, mode 0600), kept only on the agency's own machines.


def new_key_id(now: datetime | None = None) -> str:
    """Sortable, so the newest key is the greatest id."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%S%f}-{os.urandom(2).hex()}"


def generate_keypair(agency_ori: str, public_dir: Path, private_dir: Path) -> str:
    """Write a new key pair for the agency; returns its key id. Older keys are kept."""
    ori = check_ori(agency_ori)
    key_id = new_key_id()
    private = X25519PrivateKey.generate()
    folder = private_dir / ori.lower()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    target = folder / f"{key_id}.pem"
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_dir.mkdir(parents=True, exist_ok=True)
    (public_dir / f"{ori.lower()}.{key_id}.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id


def newest_public_key(agency_ori: str, public_dir: Path) -> PublicKey | None:
    """The key a router encrypts to now: the agency's newest public key, or None."""
    ori = check_ori(agency_ori)
    files = sorted(public_dir.glob(f"{ori.lower()}.*.pub"))
    if not files:
        return None
    path = files[-1]
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:  # not PEM at all: the same fix as a key of the wrong type
        key = None
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(f"{path} is not an X25519 public key; regenerate it with mutualaid keys")
    return PublicKey(ori, path.name.removeprefix(f"{ori.lower()}.").removesuffix(".pub"), key)


def load_keyring(agency_ori: str, private_dir: Path) -> PrivateKeyring:
    ori = check_ori(agency_ori)
    keys: dict[str, X25519PrivateKey] = {}
    for path in sorted((private_dir / ori.lower()).glob("*.pem")):
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):  # not PEM, or protected by a password
            key = None
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError(f"{path} is not an X25519 private key")
        keys[path.stem] = key
    return PrivateKeyring(ori, keys)


def generate_hash_key(path: Path) -> None:
    """A 256-bit secret for keyed hashes, written once with mode 0600 (never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(os.urandom(32).hex().encode())


def load_hash_key(path: Path) -> bytes | None:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        raise KeyFileError(
            f"{path} is not a hash key (64 hex digits); restore it, or make a new one with "
            "mutualaid keys hash-key (hashes made with the old one will stop matching)"
        ) from None
