"""A small certificate authority for the cluster: the CA, broker certificates and one client
certificate per principal (mTLS), as PEM files Kafka 4.x (ssl.keystore.type=PEM) and
librdkafka read directly.

    <dir>/ca.pem, ca.key          the CA (keep ca.key offline once the certificates are made)
    <dir>/<name>.pem, <name>.key  a certificate (its chain: itself, then the CA) and its key;
                                  <name>.keystore.pem both in one file, for Kafka's keystore

Keys are written 0600 in a 0700 directory. A client certificate's subject is ``CN=<principal>``,
which the broker maps to ``User:<principal>`` (``ssl.principal.mapping.rules``), the names
``mutualaid acls`` grants to. Rotating: issue a new certificate under the same name (the old
one stays valid until it expires: ``DAYS``), restart the client; a new CA means every
truststore gets the new ``ca.pem`` before the old one is dropped.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mutualaid.errors import UsageError
from mutualaid.private import open_private, private_dir

DAYS = 365
CA_DAYS = 5 * 365


class CertificateError(UsageError):
    """A certificate cannot be made as asked (bad name, a CA key missing)."""


@dataclass(frozen=True)
class Issued:
    name: str
    certificate: Path  # the chain, PEM
    key: Path  # PKCS#8 PEM, unencrypted, 0600
    keystore: Path  # key then chain, one PEM file (Kafka's ssl.keystore.type=PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def ensure_ca(directory: Path, common_name: str = "mutualaid CA") -> Path:
    """The CA certificate in ``directory``, made (with its key) if there is none yet."""
    private_dir(directory)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(_pem(cert))
    return cert_path


def issue(directory: Path, name: str, hosts: tuple[str, ...] = ()) -> Issued:
    """A certificate for ``name`` signed by the CA in ``directory``: a client certificate
    (``CN=<name>``), also a server certificate for ``hosts`` (DNS names or IP addresses) when
    any are given. An existing one of that name is replaced (rotation)."""
    if not name or any(c in name for c in '/\\,=+<>#;"') or name.startswith("."):
        raise CertificateError(
            f"certificate name {name!r}: use a principal name such as router or "
            "projector-ca0990100 (letters, digits, - and _)"
        )
    key_path = directory / "ca.key"
    if not key_path.exists():
        raise CertificateError(
            f"{key_path}: no CA key to sign with; make the CA there first (mutualaid certs "
            f"--dir {directory} ca) or point --dir at the directory holding ca.key"
        )
    ca_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if hosts:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
        ca_key, hashes.SHA256()
    )
    chain = _pem(cert) + _pem(ca_cert)
    issued = Issued(
        name,
        directory / f"{name}.pem",
        directory / f"{name}.key",
        directory / f"{name}.keystore.pem",
    )
    write_private(issued.key, _key_pem(key))
    write_private(issued.keystore, _key_pem(key) + chain)
    issued.certificate.write_bytes(chain)
    return issued


def write_private(path: Path, data: bytes) -> None:
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def client_properties(directory: Path, name: str) -> dict[str, str]:
    """The ``kafka`` settings of a client that logs in with ``name``'s certificate (mTLS)."""
    return {
        "security.protocol": "SSL",
        "ssl.ca.location": str(directory / "ca.pem"),
        "ssl.certificate.location": str(directory / f"{name}.pem"),
        "ssl.key.location": str(directory / f"{name}.key"),
    }
