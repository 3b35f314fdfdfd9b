"""Administering the region: ``agreements check|explain``, broker ``acls``, ``keys`` and
``audit verify``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from cli.common import registry_and_policy
from mutualaid.errors import EXIT_CONFIG, MutualaidError
from mutualaid.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    agreements = sub.add_parser("agreements", help="work with sharing agreements")
    agreements_sub = agreements.add_subparsers(required=True, metavar="action")
    check = agreements_sub.add_parser("check", help="validate the registry and every agreement")
    check.set_defaults(handler=_agreements_check)
    explain = agreements_sub.add_parser("explain", help="show the decision for one event")
    explain.add_argument(
        "--event",
        required=True,
        type=Path,
        help="the event as JSON: {envelope: {...}, body: {...}}",
    )
    explain.add_argument("--partner", help="only this partner (default: every partner named)")
    explain.set_defaults(handler=_agreements_explain)

    acls = sub.add_parser(
        "acls",
        help="the broker ACLs each agency and stage needs (print, or --apply)",
        description="Derive the exact ACL set from the agency registry and the topic layout: "
        "each agency's connector, projector, console and webhooks principals, the router and "
        "the matcher. Run as the broker's super user to --apply.",
    )
    acls.add_argument("--apply", action="store_true", help="create them with the AdminClient")
    acls.add_argument(
        "--create-topics",
        action="store_true",
        help="with --apply, also create the region's topics (stages under ACLs may not)",
    )
    acls.set_defaults(handler=_acls)

    cert = sub.add_parser(
        "certs",
        help="make the cluster's CA and TLS certificates (mTLS principals, brokers)",
        description="Issue PEM certificates signed by the CA in --dir (made first if missing): "
        "one per NAME, whose CN is the principal the broker sees. Keys are written 0600.",
    )
    cert.add_argument("names", nargs="*", metavar="NAME", help="e.g. router, broker, admin")
    cert.add_argument("--dir", type=Path, required=True, help="where the CA and certificates are")
    cert.add_argument(
        "--host", action="append", default=[], help="a broker's host name or IP (server cert)"
    )
    cert.add_argument(
        "--all-principals",
        action="store_true",
        help="also one for every principal `mutualaid acls` names",
    )
    cert.set_defaults(handler=_certs)

    keys = sub.add_parser("keys", help="manage encryption keys")
    keys_sub = keys.add_subparsers(required=True, metavar="action")
    for action, text in (
        ("generate", "create the agency's first key pair"),
        ("rotate", "add a newer key pair; older ones still decrypt"),
    ):
        command = keys_sub.add_parser(action, help=text)
        command.add_argument("--agency", required=True, help="ORI of the agency")
        command.set_defaults(handler=_keys_generate)
    hash_key = keys_sub.add_parser("hash-key", help="create the router's keyed-hash secret")
    hash_key.set_defaults(handler=_keys_hash)
    stage_key = keys_sub.add_parser("stage", help="create a stage's audit signing key (Ed25519)")
    stage_key.add_argument(
        "--stage",
        required=True,
        help="the signing stage: the router_id (mutualaid-router), the matcher_id "
        "(mutualaid-matcher) or projector-<ori> (an agency's search audit)",
    )
    stage_key.add_argument(
        "--rotate",
        action="store_true",
        help="replace the stage's key; the old public key is kept so old records still verify",
    )
    stage_key.set_defaults(handler=_keys_stage)

    audit = sub.add_parser("audit", help="check the audit topics")
    audit_sub = audit.add_subparsers(required=True, metavar="action")
    verify = audit_sub.add_parser(
        "verify", help="check every record's signature and every writer's chain"
    )
    verify.add_argument(
        "--topic", action="append", help="topic to check (repeatable); default both audit topics"
    )
    verify.add_argument(
        "--as",
        dest="stream",
        help="the audit topic the records were written for, to check a copy (mirror, backup)",
    )
    verify.add_argument(
        "--stage",
        action="append",
        dest="stages",
        help="check only the records signed as this stage (repeatable), e.g. where several "
        "regions share a broker; unsigned records are then not checked",
    )
    verify.set_defaults(handler=_audit_verify)


def _agreements_check(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.policycheck import findings

    registry, policy = registry_and_policy(settings)
    found = findings(policy, datetime.now(UTC))
    for finding in found:
        print(finding)
    errors = sum(f.level == "error" for f in found)
    print(
        f"{'ok' if not errors else f'{errors} error(s)'}: {len(registry.agencies)} agencies in "
        f"{settings.agencies_file}, {len(policy.agreements)} agreements in "
        f"{settings.agreements_dir}, {len(policy.rules)} rules in {settings.rules_dir}"
    )
    return 1 if errors else 0


def _agreements_explain(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.events import event_from_json
    from mutualaid.policycheck import describe

    registry, policy = registry_and_policy(settings)
    try:
        event = event_from_json(args.event)
    except ValueError as exc:
        print(f"mutualaid agreements explain: {args.event}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    decisions = policy.decide(event)
    if args.partner:
        partner = registry.get(args.partner).ori
        decisions = [d for d in decisions if d.partner_ori == partner]
        if not decisions:
            print(
                f"{partner}: DENIED (default deny: no agreement of "
                f"{event['envelope']['source_ori']} for {event['envelope']['kind']} names it)"
            )
            return 0
    if not decisions:
        print("no agreement covers this owner and kind: nobody receives it (default deny)")
    for decision in decisions:
        print("\n".join(describe(decision)))
    return 0


def _acls(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import acls
    from mutualaid.agencies import load_registry
    from mutualaid.kafka import wait_for_broker

    registry = load_registry(settings.agencies_file)
    wanted = acls.derive(registry, router_id=settings.router_id, matcher_id=settings.matcher_id)
    for acl in wanted:
        print(acl.line())
    if not args.apply:
        print(f"{len(wanted)} ACLs; --apply creates them (as the broker's super user)")
        return 0
    admin = wait_for_broker(settings)
    if args.create_topics:
        from mutualaid.kafka import ensure_topics
        from mutualaid.topics import TopicSpec, router_control_topic, topics_for

        specs = topics_for(registry.oris, settings.partitions, settings.retention)
        specs.append(TopicSpec(router_control_topic(settings.router_id), settings.partitions))
        made = ensure_topics(admin, specs, settings.replication_factor)
        print(f"{len(made)} topics created")
    for future in admin.create_acls(acls.to_bindings(wanted)).values():
        future.result()  # raises with the broker's reason, e.g. no authorizer configured
    acls.await_in_force(admin, wanted)
    print(f"applied {len(wanted)} ACLs to {settings.bootstrap_servers}, in force")
    return 0


def _certs(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import acls, certs
    from mutualaid.agencies import load_registry

    names = list(args.names)
    if args.all_principals:
        registry = load_registry(settings.agencies_file)
        derived = acls.derive(
            registry, router_id=settings.router_id, matcher_id=settings.matcher_id
        )
        names += sorted({a.principal for a in derived} - set(names))
    print(f"CA: {certs.ensure_ca(args.dir)}")
    for name in names:
        issued = certs.issue(args.dir, name, tuple(args.host))
        print(f"{name}: {issued.certificate} (key {issued.key}, 0600)")
    return 0


def _keys_generate(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.crypto import generate_keypair

    ori = registry_and_policy(settings)[0].get(args.agency).ori
    key_id = generate_keypair(ori, settings.public_keys_dir, settings.private_keys_dir)
    print(
        f"{ori}: new key {key_id}\n"
        f"  private (keep on this agency's machines only): "
        f"{settings.private_keys_dir / ori.lower() / (key_id + '.pem')}\n"
        f"  public (give to the routers that share with {ori}): "
        f"{settings.public_keys_dir / f'{ori.lower()}.{key_id}.pub'}"
    )
    return 0


def _keys_stage(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.auditlog import generate_stage_key, rotate_stage_key

    if args.rotate:
        public, retired = rotate_stage_key(settings, args.stage)
        print(
            f"audit key for {args.stage} rotated; verifiers need {public} and keep {retired}; "
            "restart the stage to sign with the new key"
        )
        return 0
    try:
        public = generate_stage_key(settings, args.stage)
    except FileExistsError:
        print(
            f"mutualaid keys: {args.stage} has an audit key; not overwritten (--rotate "
            "replaces it)",
            file=sys.stderr,
        )
        return 1
    print(f"audit key for {args.stage} created; verifiers need {public}")
    return 0


def _keys_hash(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.crypto import generate_hash_key

    try:
        generate_hash_key(settings.hash_key_file)
    except FileExistsError:
        raise MutualaidError(
            f"keys: {settings.hash_key_file} exists; not overwritten (hashes made "
            "with it would stop matching)"
        ) from None
    print(f"hash key written to {settings.hash_key_file} (mode 0600)")
    return 0


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 if every record checks out, 4 if any is forged, altered, missing or reordered."""
    from mutualaid.auditlog import verify
    from mutualaid.kafka import wait_for_broker
    from mutualaid.topics import AUDIT_DISSEMINATION, AUDIT_SEARCH

    wait_for_broker(settings)
    broken = False
    for topic in args.topic or [AUDIT_DISSEMINATION, AUDIT_SEARCH]:
        report = verify(settings, topic, args.stream, args.stages)
        chains = ", ".join(f"{w} to seq {n}" for w, n in sorted(report.writers.items()))
        print(f"{topic}: {report.records} record(s); chains: {chains or 'none'}")
        if report.skipped:
            print(f"  {report.skipped} record(s) not signed as {', '.join(args.stages)}: skipped")
        for line in report.gaps:
            print(f"  gap: {line}")
        for line in report.problems:
            print(f"  {line}")
        print(f"  {'intact' if report.intact else 'NOT INTACT'}")
        broken = broken or not report.intact
    return 4 if broken else 0
