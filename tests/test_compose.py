"""docker-compose.yml and deploy/Dockerfile: every stage runs a real mutualaid command with
valid settings, Prometheus scrapes exactly the stages, and (where Docker runs) the image
builds and starts. No Docker engine runs on the development or CI machines, so the image
test skips there and runs wherever one does."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.main import _parser
from mutualaid import acls
from mutualaid.agencies import load_registry
from mutualaid.kafkaserver import KafkaCluster, Security, docker_name, kafka_version
from mutualaid.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
IMAGE = "mutualaid:latest"
PASSWORD = "not-a-real-password"  # what an operator exports as MUTUALAID_PG_PASSWORD


def compose() -> dict:
    """The compose file with ${VAR:?message} filled in as docker-compose would."""
    text = re.sub(r"\$\{MUTUALAID_PG_PASSWORD:\?[^}]*\}", PASSWORD, COMPOSE.read_text())
    return yaml.safe_load(text.replace("$$", "$"))


def stages() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def settings_of(service: dict) -> Settings:
    env = service["environment"]
    assert all(k.startswith(ENV_PREFIX) for k in env), env
    values = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()}
    if "kafka" in values:  # a JSON object, as pydantic-settings reads it from the environment
        values["kafka"] = json.loads(values["kafka"])
    return Settings(**values)


def script_commands(script: str) -> list[list[str]]:
    """The mutualaid commands a service's shell script runs, its `for ori in ...` unrolled."""
    loop = re.search(r"for ori in ([^;]+);", script)
    oris = loop.group(1).split() if loop else []
    argvs = []
    for line in script.splitlines():
        if "mutualaid " in line:
            argv = shlex.split(line.split("mutualaid ", 1)[1])
            looped = "$ori" in argv
            argvs += [[a.replace("$ori", o) for a in argv] for o in oris] if looped else [argv]
    return argvs


def test_every_stage_runs_a_real_command_with_valid_settings() -> None:
    registry = load_registry(ROOT / "deploy" / "agencies.yaml")
    services = stages()
    commands = {}
    for name, service in services.items():
        if service.get("entrypoint") == ["sh", "-c"]:
            argvs = script_commands(service["command"][0])
        else:
            argvs = [service["command"]]
        for argv in argvs:
            args = _parser().parse_args(argv)  # exits (fails the test) on a bad command
            if getattr(args, "agency", None):
                assert registry.get(args.agency).ori == args.agency
        commands[name] = argvs
        settings = settings_of(service)
        assert settings.bootstrap_servers == "kafka:9093"  # the mTLS listener
        assert settings.index_url is not None and PASSWORD in settings.index_url
    # A projector for every agency in the registry, and the keys it needs made first.
    projected = {argv[2] for argvs in commands.values() for argv in argvs if argv[0] == "project"}
    assert projected == set(registry.oris)
    generated = {argv[3] for argv in commands["keys"] if argv[:2] == ["keys", "generate"]}
    assert generated == set(registry.oris)
    assert services["router"]["depends_on"]["keys"]["condition"] == "service_completed_successfully"


def test_the_search_api_and_its_projector_agree_on_keeping_fields_encrypted() -> None:
    services = stages()
    for ori in ("ca0990100",):
        api, projector = services[f"api-{ori}"], services[f"project-{ori}"]
        assert settings_of(api).index_keep_encrypted is settings_of(projector).index_keep_encrypted


def test_prometheus_scrapes_exactly_the_stages_that_serve_metrics() -> None:
    scraped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "compose.yml").read_text())
    targets = {
        target
        for job in scraped["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    services = stages()
    long_running = {name for name, s in services.items() if s.get("restart") != "no"}
    port = {name: settings_of(services[name]).metrics_port for name in long_running}
    assert targets == {f"{name}:{port[name]}" for name in long_running}


def test_the_image_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    build = stages()["router"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).exists()


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (apt-get install docker-compose; it validates "
    "without an engine)",
)
def test_docker_compose_accepts_the_file() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        env={**os.environ, "MUTUALAID_PG_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def docker_engine() -> str | None:
    """Why no Docker engine can be used here, or None if one answers."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # the client raises several types for "no daemon"
        return f"no Docker engine answers here ({type(exc).__name__}); runs where Docker does"
    return None


def test_the_image_builds_and_checks_the_shipped_agreements() -> None:
    reason = docker_engine()
    if reason:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage

    with DockerImage(path=str(ROOT), dockerfile_path="deploy/Dockerfile", tag=IMAGE) as image:
        container = DockerContainer(str(image)).with_command("agreements check")
        with container:
            status = container.get_wrapped_container().wait(timeout=120)
            logs = b"".join(container.get_logs()).decode()
    assert status["StatusCode"] == 0, logs
    assert "agreement" in logs


def test_the_compose_broker_has_the_settings_the_tested_secured_broker_has(tmp_path: Path) -> None:
    """Every server property mutualaid.kafkaserver gives a secured node (the broker that
    tests/test_kafka_security.py enforces ACLs on) is in the compose Kafka's environment with
    the same value, but for what names this host (addresses, ports, directories)."""
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    tls = Path("/etc/kafka/secrets")
    assert f"tls:{tls}:ro" in kafka["volumes"]
    security = Security(tls, super_users=("admin", "schema-registry"))
    planned = KafkaCluster(security=security, root=tmp_path).server_properties()
    local = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    for key, value in planned.items():
        if key in local:
            continue
        assert env.get(docker_name(key)) == value, key
    # The same listeners by name and protocol, the compose ones on the container's name.
    names = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    assert names == {entry.split("://")[0] for entry in planned["listeners"].split(",")}
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"


def test_every_stage_connects_by_mtls_as_the_principal_its_acls_name() -> None:
    registry = load_registry(ROOT / "deploy" / "agencies.yaml")
    granted = {a.principal for a in acls.derive(registry, router_id="mutualaid-router",
                                                matcher_id="mutualaid-matcher")}  # fmt: skip
    roles = {"router": "router", "matcher": "matcher", "project": "projector", "console": "console"}
    checked = set()
    for name, service in stages().items():
        command = service.get("command")
        if not isinstance(command, list) or command[0] not in roles:
            continue
        args = _parser().parse_args(command)
        who = acls.principal(roles[command[0]], getattr(args, "agency", None))
        kafka = settings_of(service).kafka
        assert kafka["security.protocol"] == "SSL", name
        assert kafka["ssl.certificate.location"] == f"/etc/mutualaid/tls/{who}.pem", name
        assert kafka["ssl.key.location"] == f"/etc/mutualaid/tls/{who}.key", name
        assert who in granted, name
        checked.add(command[0])
    assert checked == set(roles)
    # The admin sets up topics and ACLs; the certificates exist for every principal.
    setup = compose()["services"]["setup"]
    assert setup["command"] == ["acls", "--apply", "--create-topics"]
    assert "admin.pem" in settings_of(setup).kafka["ssl.certificate.location"]
    script = compose()["services"]["certs"]["command"][0]
    assert ["certs", "--dir", "/etc/mutualaid/tls", "--all-principals", "admin",
            "schema-registry"] in script_commands(script)  # fmt: skip
