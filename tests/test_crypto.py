"""Field encryption: only the partner opens it, only for this event and field, across rotation."""

from __future__ import annotations

import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mutualaid.crypto import (
    MAX_WRAPS_PER_AGREEMENT,
    DecryptionError,
    KeyAgreements,
    generate_hash_key,
    generate_keypair,
    load_hash_key,
    load_keyring,
    newest_public_key,
    seal_fields,
)

A, B = "CA0990200", "NV0990300"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    public, private = tmp_path / "public", tmp_path / "private"
    generate_keypair(A, public, private)
    generate_keypair(B, public, private)
    return public, private


def test_partner_opens_what_was_sealed_for_it(keys: tuple[Path, Path]) -> None:
    public, private = keys
    sealed = seal_fields(
        {"persons[0].ssn": b'"123-45-6789"'}, event_id="e1", partner=newest_public_key(A, public)
    )
    assert b"123-45-6789" not in sealed.fields[0].ciphertext
    assert load_keyring(A, private).open_fields(sealed, event_id="e1") == {
        "persons[0].ssn": b'"123-45-6789"'
    }


def test_another_partners_key_cannot_open_it(keys: tuple[Path, Path]) -> None:
    public, private = keys
    sealed = seal_fields(
        {"dob": b'"1990-01-01"'}, event_id="e1", partner=newest_public_key(A, public)
    )
    b_ring = load_keyring(B, private)
    with pytest.raises(DecryptionError):
        b_ring.open_fields(sealed, event_id="e1")
    # Even relabelled with B's key id, A's wrap does not open with B's key.
    with pytest.raises(DecryptionError):
        b_ring.open_fields(replace(sealed, key_id=b_ring.key_ids[0]), event_id="e1")


def test_moving_a_ciphertext_to_another_event_or_field_fails(keys: tuple[Path, Path]) -> None:
    public, private = keys
    ring = load_keyring(A, private)
    sealed = seal_fields(
        {"persons[0].ssn": b'"1"', "persons[1].ssn": b'"2"'},
        event_id="e1",
        partner=newest_public_key(A, public),
    )
    with pytest.raises(DecryptionError):
        ring.open_fields(sealed, event_id="e2")
    first, second = sealed.fields
    swapped = replace(
        sealed, fields=(replace(first, ciphertext=second.ciphertext, nonce=second.nonce), second)
    )
    with pytest.raises(DecryptionError):
        ring.open_fields(swapped, event_id="e1")


def test_tampering_fails(keys: tuple[Path, Path]) -> None:
    public, private = keys
    sealed = seal_fields({"ssn": b'"1"'}, event_id="e1", partner=newest_public_key(A, public))
    flipped = bytes([sealed.fields[0].ciphertext[0] ^ 1]) + sealed.fields[0].ciphertext[1:]
    tampered = replace(sealed, fields=(replace(sealed.fields[0], ciphertext=flipped),))
    with pytest.raises(DecryptionError):
        load_keyring(A, private).open_fields(tampered, event_id="e1")


def test_rotation_newest_writes_every_key_reads(keys: tuple[Path, Path]) -> None:
    public, private = keys
    old_key = newest_public_key(A, public)
    old = seal_fields({"ssn": b'"1"'}, event_id="e1", partner=old_key)
    new_id = generate_keypair(A, public, private)
    assert newest_public_key(A, public).key_id == new_id != old_key.key_id
    new = seal_fields({"ssn": b'"2"'}, event_id="e2", partner=newest_public_key(A, public))
    ring = load_keyring(A, private)
    assert ring.open_fields(old, event_id="e1") == {"ssn": b'"1"'}
    assert ring.open_fields(new, event_id="e2") == {"ssn": b'"2"'}


def test_one_agreement_serves_many_records_each_bound_to_its_event(
    keys: tuple[Path, Path],
) -> None:
    """The router's cached agreement: records share an ephemeral key but not a data key, and
    each still opens only as its own event; the partner derives the agreement's KEK once."""
    public, private = keys
    now = [0.0]
    agreements = KeyAgreements(rotate_seconds=3600, clock=lambda: now[0])
    partner = newest_public_key(A, public)
    sealed = [
        seal_fields({"ssn": f'"{n}"'.encode()}, event_id=f"e{n}", partner=partner,
                    agreements=agreements)
        for n in range(3)
    ]  # fmt: skip
    assert len({s.ephemeral_public for s in sealed}) == 1
    assert len({s.wrapped_key for s in sealed}) == 3  # a fresh data key per record
    ring = load_keyring(A, private)
    for n, record in enumerate(sealed):
        assert ring.open_fields(record, event_id=f"e{n}") == {"ssn": f'"{n}"'.encode()}
    assert len(ring._keks) == 1  # one ECDH for the three
    with pytest.raises(DecryptionError):  # a whole sealed block moved to another event
        ring.open_fields(sealed[0], event_id="e1")
    with pytest.raises(DecryptionError):  # another record's wrap under the same agreement
        ring.open_fields(replace(sealed[0], wrap_nonce=sealed[1].wrap_nonce,
                                 wrapped_key=sealed[1].wrapped_key), event_id="e0")  # fmt: skip
    # Renewed after the rotation period, and at once when the partner's newest key changes.
    now[0] = 3600.0
    later = seal_fields({"ssn": b'"x"'}, event_id="e9", partner=partner, agreements=agreements)
    assert later.ephemeral_public != sealed[0].ephemeral_public
    generate_keypair(A, public, private)
    rotated = newest_public_key(A, public)
    after = seal_fields({"ssn": b'"y"'}, event_id="e10", partner=rotated, agreements=agreements)
    assert after.key_id == rotated.key_id != partner.key_id
    assert after.ephemeral_public != later.ephemeral_public
    assert load_keyring(A, private).open_fields(after, event_id="e10") == {"ssn": b'"y"'}
    # And after MAX_WRAPS_PER_AGREEMENT wraps.
    agreements.current(rotated).uses = MAX_WRAPS_PER_AGREEMENT
    again = seal_fields({"ssn": b'"z"'}, event_id="e11", partner=rotated, agreements=agreements)
    assert again.ephemeral_public != after.ephemeral_public


def test_a_forged_ephemeral_key_is_refused_and_not_remembered(keys: tuple[Path, Path]) -> None:
    public, private = keys
    sealed = seal_fields({"ssn": b'"1"'}, event_id="e1", partner=newest_public_key(A, public))
    ring = load_keyring(A, private)
    with pytest.raises(DecryptionError):
        ring.open_fields(replace(sealed, ephemeral_public=b"\x01" * 31), event_id="e1")
    with pytest.raises(DecryptionError):
        ring.open_fields(replace(sealed, ephemeral_public=bytes(32)), event_id="e1")
    assert len(ring._keks) == 0
    assert ring.open_fields(sealed, event_id="e1") == {"ssn": b'"1"'}


def test_private_keys_are_owner_only_and_never_overwritten(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    _, private = keys
    for pem in (private / A.lower()).glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    hash_file = tmp_path / "hash.key"
    generate_hash_key(hash_file)
    key = load_hash_key(hash_file)
    assert key is not None and len(key) == 32
    with pytest.raises(FileExistsError):
        generate_hash_key(hash_file)
    assert load_hash_key(hash_file) == key


def test_keys_commands(tmp_path: Path) -> None:
    env = {"MUTUALAID_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "keys", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    first = keys("generate", "--agency", "ca0990200")
    assert first.returncode == 0, first.stderr
    assert "private (keep on this agency's machines only)" in first.stdout
    second = keys("rotate", "--agency", "CA0990200")
    assert second.returncode == 0
    ring = load_keyring("CA0990200", tmp_path / "keys" / "private")
    assert len(ring.key_ids) == 2
    assert newest_public_key("CA0990200", tmp_path / "keys" / "public").key_id == ring.key_ids[-1]
    assert keys("hash-key").returncode == 0
    again = keys("hash-key")
    assert again.returncode == 1 and "not overwritten" in again.stderr
    unknown = keys("generate", "--agency", "TX0000000")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("mutualaid: TX0000000 is not in the agency registry")
