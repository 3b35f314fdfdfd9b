"""The kafka: setting: checked, never shown with its secrets, passed to every confluent-kafka
client; and the certificates mutualaid.certs makes.
(Logins against a real broker: tests/test_kafka_security.py.)"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mutualaid import certs
from mutualaid.configfile import ConfigError
from mutualaid.kafka import consumer_config, producer_config
from mutualaid.kafkaclients import REDACTED
from mutualaid.settings import Settings, load_settings

SECRET = "correct-horse-battery-staple"


def scram(tls: Path) -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "router",
        "sasl.password": SECRET,
        "ssl.ca.location": str(tls / "ca.pem"),
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    certs.ensure_ca(directory)
    certs.issue(directory, "broker", ("127.0.0.1", "localhost"))
    certs.issue(directory, "projector-ca0990100")
    return directory


def test_every_client_gets_the_kafka_properties_and_the_password_is_never_shown(
    tls: Path,
) -> None:
    settings = Settings(kafka=scram(tls))
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert config["sasl.password"] == SECRET
        assert config["security.protocol"] == "SASL_SSL"
    assert config["group.id"] == "g"
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.kafka_redacted["sasl.password"] == REDACTED
    assert settings.kafka_redacted["sasl.username"] == "router"


def test_a_bad_kafka_setting_names_the_property_and_the_fix_without_the_password(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mutualaid.yaml"
    config.write_text(f"kafka:\n  sasl.password: {SECRET}\n  enable.idempotence: false\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "enable.idempotence" in text and "remove it" in text and str(config) in text
    assert SECRET not in text
    with pytest.raises(ValueError, match=r"security\.protocol 'TLS'"):
        Settings(kafka={"security.protocol": "TLS"})
    with pytest.raises(ValueError, match="bootstrap_servers"):
        Settings(kafka={"bootstrap.servers": "elsewhere:9092"})


def test_certificates_name_their_principal_and_keys_are_private(tls: Path) -> None:
    client = x509.load_pem_x509_certificate((tls / "projector-ca0990100.pem").read_bytes())
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "projector-ca0990100"
    broker = x509.load_pem_x509_certificate((tls / "broker.pem").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    for key in ("ca.key", "broker.key", "broker.keystore.pem", "projector-ca0990100.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600, key
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    with pytest.raises(certs.CertificateError, match="no CA key"):
        certs.issue(tls / "elsewhere", "router")
    with pytest.raises(certs.CertificateError, match="principal name"):
        certs.issue(tls, "CN=admin,O=x")


def test_the_certs_command_issues_one_per_principal_and_refuses_a_bad_name(
    tmp_path: Path,
) -> None:
    tls = tmp_path / "tls"
    base = [sys.executable, "-m", "cli", "certs", "--dir", str(tls)]
    done = subprocess.run(
        [*base, "--host", "kafka", "broker"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    broker = x509.load_pem_x509_certificate((tls / "broker.pem").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kafka"]
    assert stat.S_IMODE((tls / "broker.key").stat().st_mode) == 0o600
    refused = subprocess.run([*base, "a,b"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "principal name" in refused.stderr
