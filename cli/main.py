"""The ``mutualaid`` command.

The ``cli`` package is the composition root: the only place that reaches into producers/,
streams/ and consumers/ (the core, mutualaid/, imports none of them), and only inside the
command that needs them, so that starting one stage never imports the others.
"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mutualaid.errors import EXIT_CONFIG, MutualaidError, Refused, UsageError
from mutualaid.settings import Settings, load_settings
from mutualaid.topics import RECORD_KINDS, Kind

if TYPE_CHECKING:  # the stages are imported only by the command that runs them
    from consumers.index.query import Hit


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Piped into `head`, exit quietly like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        settings = load_settings(args.config)
        return args.handler(settings, args)
    except MutualaidError as exc:  # the one place an error becomes an exit code
        print(f"mutualaid: {exc.prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutualaid",
        description="Share CAD, ALPR and RMS records between public-safety agencies under "
        "written sharing agreements.",
    )
    parser.add_argument("--config", type=Path, help="settings file (YAML); default: none")
    sub = parser.add_subparsers(required=True, metavar="command")

    up = sub.add_parser("up", help="run the whole embedded stack: broker, router, projectors")
    up.add_argument("--demo", action="store_true", help="generate and publish demo ALPR data")
    up.add_argument("--reads", type=int, default=5000, help="demo reads per agency")
    up.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once the demo data is indexed (for scripts)",
    )
    up.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded broker (default, starts in ms); kafka: Apache Kafka itself "
        "(KRaft, from the jars deploy/kafka/pom.xml fetches; needs Java 17)",
    )
    up.set_defaults(handler=_up)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu)")
    broker.add_argument("--port", type=int, help="default: broker_port setting (19092)")
    broker.set_defaults(handler=_broker)

    connect = sub.add_parser(
        "connect",
        help="publish a source's records as events",
        description="Publish an agency's source records to src.<ori>.<kind>, from a file "
        "(alpr: CSV/NDJSON export), a drop directory (cad: EIDO *.json, rms: NIBRS *.xml) or, "
        "with --sql, a database table polled for changed rows (cad, rms). Resumes from its "
        "checkpoint under <data_dir>/checkpoints/.",
    )
    connect.add_argument("source_kind", choices=["alpr", "cad", "rms"], help="what kind of source")
    connect.add_argument("--agency", required=True, help="ORI of the agency that owns the data")
    where = connect.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--source",
        type=Path,
        help="alpr: the export file; cad: a directory of EIDO *.json (or one NDJSON file of "
        "them); rms: a directory of NIBRS *.xml (or one .xml file)",
    )
    where.add_argument("--sql", help="SQLAlchemy URL of the database to poll (cad, rms)")
    where.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="alpr: serve POST /v1/reads for cameras that push reads (see `camera add`)",
    )
    connect.add_argument("--table", help="with --sql: the table or view to poll")
    connect.add_argument(
        "--mapping", type=Path, help="alpr: vendor column mapping; --sql: table mapping (YAML)"
    )
    connect.add_argument(
        "--timezone",
        default="UTC",
        help="rms: IANA zone of NIBRS times written without an offset, e.g. America/Los_Angeles",
    )
    connect.add_argument(
        "--name", help="checkpoint name (default: <ori>-<file name>, <ori>-<kind>-<source>)"
    )
    connect.add_argument(
        "--follow", action="store_true", help="keep reading as the source grows (Ctrl-C stops)"
    )
    connect.add_argument("--report", type=Path, help="write the final counts here as JSON")
    connect.set_defaults(handler=_connect)

    _token_commands(
        sub, "camera", "cameras that push reads over HTTP", "cameras_file", "camera",
        "the id the camera's reads carry", positional=True,
        display_name="where the camera is, e.g. 'Main St & Pioneer Trl'; given to its reads "
        "that name no place themselves",
    )  # fmt: skip

    router = sub.add_parser("router", help="run the sharing router (faust)")
    router.set_defaults(handler=_router)

    matcher = sub.add_parser("matcher", help="match plate reads against hotlists (faust)")
    matcher.set_defaults(handler=_matcher)

    hotlist = sub.add_parser("hotlist", help="an agency's hotlist: NCIC extracts and BOLOs")
    hotlist_sub = hotlist.add_subparsers(required=True, metavar="action")
    load = hotlist_sub.add_parser(
        "load", help="publish an NCIC-style extract (CSV); entries it no longer lists are removed"
    )
    load.add_argument("--agency", required=True, help="ORI of the agency whose hotlist it is")
    load.add_argument("file", type=Path, help="the extract, CSV with a header line")
    load.set_defaults(handler=_hotlist_load)
    bolo = hotlist_sub.add_parser("add", help="add a local BOLO (be-on-the-lookout)")
    bolo.add_argument("--agency", required=True, help="ORI of the agency issuing it")
    bolo.add_argument("--plate", required=True)
    bolo.add_argument("--state", help="issuing state; omit to match the plate from any state")
    bolo.add_argument("--reason", default="bolo", help="bolo (default), wanted, amber, ...")
    bolo.add_argument("--expires", help="date (through that day) or ISO 8601 instant")
    bolo.add_argument("--id", help="the BOLO's id (default: a new BOLO-... id)")
    for name in ("make", "model", "color", "caution", "notes"):
        bolo.add_argument(f"--{name}")
    bolo.set_defaults(handler=_hotlist_add)
    remove = hotlist_sub.add_parser("remove", help="remove an entry by BOLO id or NCIC number")
    remove.add_argument("--agency", required=True)
    remove.add_argument("id")
    remove.set_defaults(handler=_hotlist_remove)
    show = hotlist_sub.add_parser("list", help="the agency's entries as the matcher sees them")
    show.add_argument("--agency", required=True)
    show.set_defaults(handler=_hotlist_list)

    project = sub.add_parser("project", help="project an agency's share topics into its index")
    project.add_argument("--agency", required=True, help="ORI of the agency whose index to fill")
    project.set_defaults(handler=_project)

    search = sub.add_parser("search", help="search an agency's index (audited)")
    search.add_argument("--agency", required=True, help="ORI of the agency searching")
    search.add_argument("--plate", help="plate, tolerant of misreads; * and ? are wildcards")
    search.add_argument("--name", help='person, "last" or "first last"; small misspellings ok')
    search.add_argument("--dob", help="date of birth, YYYY-MM-DD")
    search.add_argument("--incident", help="incident or report number")
    search.add_argument("--text", help="words anywhere in the record, e.g. narratives")
    search.add_argument(
        "--id",
        dest="identifier",
        help="an identifier (licence, SSN, VIN, phone), found also where shared encrypted",
    )
    search.add_argument("--near", help="LAT,LON,KM: within KM of a point")
    search.add_argument("--since", type=datetime.fromisoformat, help="from this time (ISO 8601)")
    search.add_argument("--until", type=datetime.fromisoformat, help="up to this time")
    search.add_argument("--from-agency", help="only records of this owner ORI")
    search.add_argument("--kind", choices=[str(k) for k in RECORD_KINDS], help="only this kind")
    search.add_argument("--reason", default="", help="case or incident number (required)")
    search.add_argument("--user", default=getpass.getuser(), help="who is searching")
    search.add_argument("--limit", type=int, default=25, help="most results shown (25)")
    search.add_argument("--json", action="store_true", help="print JSON lines")
    search.add_argument(
        "--reveal",
        action="store_true",
        help="open fields the index keeps encrypted (index_keep_encrypted); logged as such",
    )
    search.set_defaults(handler=_search)

    api = sub.add_parser("api", help="serve the agency's search over HTTP (OpenAPI at /docs)")
    api.add_argument("--agency", required=True, help="ORI of the agency whose index to serve")
    api.add_argument("--port", type=int, help="default: api_port setting (8600)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    api.set_defaults(handler=_api)
    _token_commands(
        sub, "api-user", "manage search API users", "api_users_file", "user",
        "who, as the audit should name them",
        grants={"reveal": "may open fields the index keeps encrypted (reveal=true; audited)"},
    )  # fmt: skip

    export = sub.add_parser(
        "export",
        help="write everything an agency has to a folder, in open formats (Avro, NDJSON)",
        description="Its own records, the records partners shared with it, the dissemination "
        "audit of its records, its search log, its agreements and registry entries, with a "
        "manifest of counts and SHA-256 checksums.",
    )
    export.add_argument("--agency", required=True, help="ORI of the agency")
    export.add_argument("--out", required=True, type=Path, help="folder to write (created)")
    export.add_argument("--since", type=_when, help="only what occurred at or after (ISO 8601)")
    export.add_argument("--until", type=_when, help="only what occurred before (ISO 8601)")
    export.set_defaults(handler=_export)
    import_ = sub.add_parser(
        "import", help="rebuild an agency's search index from an export's received records"
    )
    import_.add_argument("--agency", required=True, help="ORI of the agency")
    import_.add_argument("--from", dest="source", required=True, type=Path, help="export folder")
    import_.set_defaults(handler=_import)

    transparency = sub.add_parser(
        "transparency",
        help="write an agency's public transparency report (HTML and JSON) to a folder",
        description="Agreements in force in plain words; for the period, records shared, "
        "pointers, refusals and withdrawals per partner, partner searches that found its "
        "records by purpose, hotlist hits, and what partners still hold. From the audit topics; "
        "no names, plates, record ids or search terms.",
    )
    transparency.add_argument("--agency", required=True, help="ORI of the agency")
    transparency.add_argument("--out", required=True, type=Path, help="folder to write (created)")
    transparency.add_argument("--since", type=_when, help="only what happened at or after")
    transparency.add_argument("--until", type=_when, help="only what happened before")
    transparency.set_defaults(handler=_transparency)

    console = sub.add_parser("console", help="serve a dispatch center's live hit alerts")
    console.add_argument("--agency", required=True, help="ORI of the dispatch center")
    console.add_argument("--port", type=int, help="default: console_port setting (8700)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on")
    console.set_defaults(handler=_console)
    webhooks = sub.add_parser("webhooks", help="POST an agency's hit alerts to its CAD (signed)")
    webhooks.add_argument("--agency", required=True, help="ORI of the dispatch center")
    webhooks.set_defaults(handler=_webhooks)
    _token_commands(
        sub, "console-user", "manage dispatch console users", "console_users_file", "user",
        "the dispatcher, as acknowledgements name them",
    )  # fmt: skip

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
    acls.set_defaults(handler=_acls)

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
    stage_key.add_argument("--stage", required=True, help="the writer's name, e.g. router")
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
    verify.set_defaults(handler=_audit_verify)
    return parser


def _token_commands(
    sub: argparse._SubParsersAction,
    name: str,
    text: str,
    file_setting: str,
    holder: str,
    holder_help: str,
    *,
    positional: bool = False,
    display_name: str | None = None,
    grants: dict[str, str] | None = None,
) -> None:
    """`<name> add|remove`: bearer tokens for API users, dispatchers or cameras.

    ``display_name``, if given, is the help of an `add --name` option stored with the token;
    each of ``grants`` (grant: help) an `add --may-<grant>` flag.
    """
    group = sub.add_parser(name, help=text)
    actions = group.add_subparsers(required=True, metavar="action")
    for action, help_text, handler in (
        ("add", "issue a token (shown once; only its SHA-256 is kept)", _token_add),
        ("remove", "revoke every token it has", _token_remove),
    ):
        command = actions.add_parser(action, help=help_text)
        command.add_argument("--agency", required=True, help="ORI of its agency")
        if positional:
            command.add_argument("holder", metavar=holder.upper(), help=holder_help)
        else:
            command.add_argument(f"--{holder}", dest="holder", required=True, help=holder_help)
        if display_name and action == "add":
            command.add_argument("--name", dest="display_name", help=display_name)
        for grant, grant_help in (grants or {}).items() if action == "add" else ():
            command.add_argument(
                f"--may-{grant}", dest="grants", action="append_const", const=grant, help=grant_help
            )
        command.set_defaults(handler=handler, tokens_file=file_setting, holder_kind=holder)


def _token_add(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import tokens

    ori = _agency(settings, args.agency)
    token = tokens.issue(
        getattr(settings, args.tokens_file),
        ori,
        args.holder,
        getattr(args, "display_name", None),
        frozenset(getattr(args, "grants", None) or ()),
    )
    print(f"token for {args.holder_kind} {args.holder} of {ori} (shown only now):\n{token}")
    return 0


def _token_remove(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import tokens

    ori = _agency(settings, args.agency)
    revoked = tokens.revoke(getattr(settings, args.tokens_file), ori, args.holder)
    print(f"revoked {revoked} token(s) of {args.holder_kind} {args.holder}")
    return 0 if revoked else 1


def _registry_and_policy(settings: Settings):
    from mutualaid.agencies import load_registry
    from mutualaid.policy import load_policy_from

    registry = load_registry(settings.agencies_file)
    return registry, load_policy_from(settings, registry)


def _stop_event() -> threading.Event:
    """Set on SIGTERM or Ctrl-C, so loops finish their batch and commit before exiting."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from cli.up import run_up

    return run_up(
        settings,
        demo=args.demo,
        reads=args.reads,
        exit_when_done=args.exit_when_done,
        broker_kind=args.broker,
    )


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.agencies import load_registry
    from mutualaid.broker import EmbeddedBroker
    from mutualaid.kafka import ensure_topics, wait_for_broker
    from mutualaid.topics import topics_for

    registry = load_registry(settings.agencies_file)
    broker = EmbeddedBroker(
        args.port or settings.broker_port, log=settings.data_dir / "logs" / "broker.log"
    )
    (settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    broker.start()  # BrokerError: main reports it
    try:
        created = ensure_topics(
            wait_for_broker(broker.bootstrap_servers),
            topics_for(registry.oris, settings.partitions, settings.retention),
            settings.replication_factor,
        )
        print(
            f"broker ready at {broker.bootstrap_servers} ({len(created)} topics created); "
            "Ctrl-C stops it",
            flush=True,
        )
        stop = _stop_event()
        while not stop.wait(0.5):
            if not broker.running():
                print(
                    "mutualaid broker: the broker process exited; see var/logs/broker.log",
                    file=sys.stderr,
                )
                return 1
    finally:
        broker.stop()
    return 0


def _connect(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.agencies import load_registry
    from mutualaid.kafka import wait_for_broker
    from producers.runner import Runner

    ori = load_registry(settings.agencies_file).get(args.agency).ori
    if args.listen:
        return _listen(settings, args, ori)
    try:
        adapter, source, label = _connector(settings, args, ori)
    except (OSError, ValueError) as exc:
        raise UsageError(f"connect: {exc}") from exc
    wait_for_broker(settings.bootstrap_servers)
    from mutualaid.metrics import serve_metrics

    serve_metrics(settings.metrics_port)
    name = args.name or f"{ori.lower()}-{label}"
    runner = Runner(
        settings,
        ori,
        adapter,
        source,
        name=name,
        on_progress=lambda p: print(p.line(name), flush=True),
    )
    from mutualaid.kafka import DeliveryFailed

    try:
        progress = runner.run(stop=_stop_event(), follow=args.follow)
    except DeliveryFailed as exc:
        # Nothing unacknowledged was checkpointed: running it again resumes from there.
        print(f"mutualaid connect: {exc}; run it again to resume", file=sys.stderr)
        return 1
    print(progress.line(name) + "  done", flush=True)
    if args.report:
        args.report.write_text(json.dumps(progress.counts()))
    return 0


def _listen(settings: Settings, args: argparse.Namespace, ori: str) -> int:
    import uvicorn

    from mutualaid.kafka import wait_for_broker
    from mutualaid.metrics import serve_metrics
    from producers.alpr import load_mapping
    from producers.alpr_http import ReadIngest, create_ingest

    host, _, port = args.listen.rpartition(":")
    if args.source_kind != "alpr" or not port.isdigit():
        raise UsageError("connect: --listen HOST:PORT serves ALPR reads only")
    try:
        mapping = load_mapping(args.mapping or Path("deploy/mappings/alpr/mutualaid-ndjson.yaml"))
        ingest = ReadIngest(settings, ori, mapping)
    except ValueError as exc:
        raise UsageError(f"connect: {exc}") from exc
    wait_for_broker(settings.bootstrap_servers)
    serve_metrics(settings.metrics_port)
    app = create_ingest(settings, ingest)
    uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level="warning")
    return 0


def _connector(settings: Settings, args: argparse.Namespace, ori: str):
    """(adapter, source, checkpoint label) for `connect`; ValueError says what to fix."""
    from producers.sources import DocumentDirectory, LineFile

    kind = args.source_kind
    if args.sql:
        if kind == "alpr":
            raise ValueError("--sql polls CAD or RMS tables; ALPR reads come from --source")
        from producers.sqlpoll import SqlMapping, SqlPoller, SqlRowAdapter, load_sql_mapping

        mapping = load_sql_mapping(args.mapping) if args.mapping else SqlMapping()
        table = args.table or mapping.table
        if not table:
            raise ValueError("--sql needs --table (or table: in the --mapping file)")
        try:
            poller = SqlPoller(args.sql, table, mapping)
        except ValueError:
            raise
        except Exception as exc:  # SQLAlchemy: bad URL, unreachable server, no such table
            raise ValueError(f"{args.sql}: cannot poll table {table!r}: {exc}") from None
        item_kind = Kind.CAD_INCIDENT if kind == "cad" else Kind.RMS_RECORD
        adapter = SqlRowAdapter(item_kind, mapping, ori, list(poller.table.c.keys()))
        return adapter, poller, f"{kind}-sql-{table}"
    path: Path = args.source
    if args.table:
        raise ValueError("--table goes with --sql")
    if kind == "alpr":
        from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
        from producers.jsonlimits import ReadLimits

        alpr_mapping = load_mapping(args.mapping or DEFAULT_MAPPING)
        source = LineFile(path, has_header=alpr_mapping.format == "csv")
        try:
            alpr = AlprAdapter(alpr_mapping, source.header, ori, ReadLimits.of(settings))
            return alpr, source, path.name
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if args.mapping:
        raise ValueError("--mapping is for alpr exports and --sql tables")
    if kind == "cad":
        from producers.cad import CadAdapter

        if path.is_dir():
            return CadAdapter(ori), DocumentDirectory(path, "*.json"), f"cad-{path.name}"
        return CadAdapter(ori), LineFile(path, has_header=False), f"cad-{path.name}"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from producers.rms import RmsAdapter

    try:
        rms = RmsAdapter(ori, zone=ZoneInfo(args.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--timezone {args.timezone!r} is not an IANA zone") from None
    if path.is_dir():
        return rms, DocumentDirectory(path, "*.xml"), f"rms-{path.name}"
    if not path.is_file():
        raise ValueError(f"{path}: no such file or directory")
    return rms, DocumentDirectory(path.parent, path.name), f"rms-{path.name}"


def _router(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import run_router

    registry, policy = _registry_and_policy(settings)
    run_router(settings, registry, policy)  # MissingKey, KeyFileError: main reports them
    return 0


def _agency(settings: Settings, ori: str) -> str:
    """The ORI of an agency in the registry, or UnknownAgency (main reports it)."""
    from mutualaid.agencies import load_registry

    return load_registry(settings.agencies_file).get(ori).ori


def _matcher(settings: Settings, args: argparse.Namespace) -> int:
    from streams.matcher_app import run_matcher

    registry, policy = _registry_and_policy(settings)
    run_matcher(settings, registry, policy)
    return 0


def _hotlist_load(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import load_extract

    try:  # ExtractError: main reports it
        report = load_extract(settings, _agency(settings, args.agency), args.file)
    except OSError as exc:
        raise UsageError(f"hotlist load: {exc}") from exc
    print(
        f"{report.published} entries published, {report.removed} removed (no longer in the "
        f"extract), {report.rejected} lines rejected (see dlq.producers)"
    )
    return 0 if not report.rejected else 1


def _hotlist_add(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import add_bolo

    fields = {
        "plate": args.plate,
        "state": args.state,
        "reason": args.reason,
        "expires": args.expires,
        "vehicle_make": args.make,
        "vehicle_model": args.model,
        "vehicle_color": args.color,
        "caution": args.caution,
        "notes": args.notes,
    }
    # Rejected (a field to fix): main reports it
    record_id = add_bolo(settings, _agency(settings, args.agency), fields, record_id=args.id)
    print(record_id)
    return 0


def _hotlist_remove(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import remove_entry

    if remove_entry(settings, _agency(settings, args.agency), args.id):
        print(f"removed {args.id}")
        return 0
    print(f"mutualaid hotlist remove: {args.agency} has no entry {args.id}", file=sys.stderr)
    return 1


def _hotlist_list(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import current_entries

    now = datetime.now(UTC)
    for record_id, event in sorted(
        current_entries(settings, _agency(settings, args.agency)).items()
    ):
        e = event["body"]
        expires = e["expires_at"]
        status = "EXPIRED" if expires is not None and expires <= now else "active"
        until = f"until {expires:%Y-%m-%d %H:%M}Z" if expires else "no expiry"
        state = e["plate_state"] or "--"
        print(f"{record_id:24} {e['plate']:10} {state:3} {e['reason']:17} {status:8} {until}")
    return 0


def _project(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.projector import Projector
    from mutualaid.agencies import load_registry
    from mutualaid.kafka import wait_for_broker
    from mutualaid.metrics import serve_metrics

    ori = load_registry(settings.agencies_file).get(args.agency).ori
    wait_for_broker(settings.bootstrap_servers)
    serve_metrics(settings.metrics_port)
    projector = Projector(settings, ori)  # IndexUnavailable: main reports it
    print(f"projecting share.{ori.lower()}.* into its index; Ctrl-C stops", flush=True)
    projector.run(_stop_event())
    return 0


def _search(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.index.query import Criteria
    from consumers.search import SearchRefused, SearchRequest, parse_near, run_search
    from mutualaid.agencies import load_registry

    registry = load_registry(settings.agencies_file)
    agency = registry.get(args.agency)
    try:
        criteria = Criteria(
            plate=args.plate,
            name=args.name,
            dob=args.dob,
            incident_number=args.incident,
            text=args.text,
            identifier=args.identifier,
            near=parse_near(args.near),
            since=args.since,
            until=args.until,
            source_ori=registry.get(args.from_agency).ori if args.from_agency else None,
            kind=args.kind,
            limit=args.limit,
        )
        request = SearchRequest(agency.ori, args.user, args.reason, criteria, args.reveal)
    except Refused:
        raise
    except (ValueError, KeyError) as exc:  # a criterion or an agency that makes no search
        raise SearchRefused(str(exc)) from exc
    hits = run_search(settings, request)  # IndexUnavailable: main reports it
    if args.json:
        for hit in hits:
            print(
                json.dumps(
                    {
                        "source_ori": hit.source_ori,
                        "kind": hit.kind,
                        "record_id": hit.record_id,
                        "version": hit.version,
                        "occurred_at": hit.occurred_at.isoformat(),
                        "tier": hit.tier,
                        "contact": hit.contact,
                        "body": hit.body,
                        "encrypted_fields": list(hit.encrypted_fields),
                        "pointer": hit.pointer_message(),
                        "own": hit.own,
                    }
                )
            )
        return 0
    names = {a.ori: a.name for a in registry.agencies}
    print(
        f"{len(hits)} record(s) visible to {agency.ori} ({agency.name}); search logged for "
        f"{args.user}, reason {args.reason!r}"
        + (f"; newest {args.limit} shown, --limit for more" if len(hits) == args.limit else "")
    )
    for hit in hits:
        pointer = hit.pointer_message(names.get(hit.source_ori, ""))
        if pointer is not None:  # all a pointer says, and the reference to quote
            print(f"  {hit.occurred_at:%Y-%m-%d}  {pointer} (reference {hit.record_id})")
            continue
        print(
            f"  {hit.occurred_at:%Y-%m-%d %H:%M:%S %Z}  {hit.kind:<12} from {hit.source_ori} "
            f"{names.get(hit.source_ori, '')}{' (own)' if hit.own else ''}: {_summary(hit)}"
        )
    return 0


def _summary(hit: Hit) -> str:
    """One line a dispatcher can read: what the record says, or whom to call."""
    body = hit.body
    if body is None:
        return f"record {hit.record_id} exists; details on request: {hit.contact or 'the owner'}"
    if hit.kind == "alpr.read":
        place = body.get("camera_name") or body.get("camera_id") or "?"
        return (
            f"{body.get('plate', '?')} {body.get('plate_state') or '--'} at {place} "
            f"({body.get('latitude')}, {body.get('longitude')})"
        )
    people = ", ".join(
        " ".join(filter(None, (p.get("first_name"), p.get("last_name"))))
        for p in body.get("persons") or []
    )
    what = body.get("incident_type_description") or ", ".join(
        o.get("description") or o.get("nibrs_code") or "" for o in body.get("offenses") or []
    )
    if not what and body.get("arrests"):  # a NIBRS Group B arrest: no offense, a charge
        what = ", ".join(
            f"arrest {a.get('arrest_number') or ''} for "
            f"{a.get('charge_description') or a.get('charge') or 'an unstated charge'}"
            for a in body["arrests"]
        )
    sealed = f" [{len(hit.encrypted_fields)} field(s) encrypted]" if hit.encrypted_fields else ""
    return f"{body.get('incident_number') or hit.record_id} {what} {people}".strip() + sealed


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from consumers.index import open_index
    from consumers.search.api import create_api
    from mutualaid.agencies import load_registry
    from mutualaid.metrics import serve_metrics

    registry = load_registry(settings.agencies_file)
    agency = registry.get(args.agency)
    open_index(settings, agency.ori).close()  # fail at start-up, not at the first search
    app = create_api(settings, agency, registry)
    serve_metrics(settings.metrics_port)  # searches per agency
    uvicorn.run(app, host=args.host, port=args.port or settings.api_port, log_level="warning")
    return 0


def _console(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.alerts.console import run_console
    from mutualaid.agencies import load_registry
    from mutualaid.metrics import serve_metrics

    registry = load_registry(settings.agencies_file)
    agency = registry.get(args.agency)
    serve_metrics(settings.metrics_port)
    run_console(settings, agency, registry, args.host, args.port or settings.console_port)
    return 0


def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.alerts.webhooks import WebhookSender, load_endpoints
    from mutualaid.metrics import serve_metrics

    ori = _agency(settings, args.agency)
    endpoints = load_endpoints(  # ConfigError: main reports it
        settings.webhooks_file, ori, allow_http_loopback=settings.webhooks_allow_http_loopback
    )
    if not endpoints:
        raise UsageError(
            f"webhooks: no endpoint for {ori} in webhooks_file "
            f"({settings.webhooks_file or 'not set'}); add one (see README)"
        )
    serve_metrics(settings.metrics_port)
    WebhookSender(settings, ori, endpoints).run(_stop_event())
    return 0


def _when(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.export import Exporter, Window
    from mutualaid.kafka import wait_for_broker

    registry, policy = _registry_and_policy(settings)
    ori = registry.get(args.agency).ori
    wait_for_broker(settings.bootstrap_servers)
    window = Window(args.since, args.until)
    Exporter(settings, registry, policy, ori, args.out, window).run()
    return 0


def _transparency(settings: Settings, args: argparse.Namespace) -> int:
    from consumers import transparency, transparency_page
    from consumers.export import Window
    from mutualaid.kafka import wait_for_broker

    registry, policy = _registry_and_policy(settings)
    ori = registry.get(args.agency).ori
    wait_for_broker(settings.bootstrap_servers)
    report = transparency.build(settings, policy, ori, Window(args.since, args.until))
    page, data = transparency_page.write(report, args.out)
    print(f"transparency report for {ori}: {page} and {data}")
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.export import import_index
    from consumers.opening import open_shared
    from mutualaid.agencies import load_registry
    from mutualaid.crypto import DecryptionError, load_keyring

    ori = load_registry(settings.agencies_file).get(args.agency).ori
    if not (args.source / "manifest.json").exists():
        print(f"mutualaid: {args.source} has no manifest.json: not an export", file=sys.stderr)
        return EXIT_CONFIG
    keyring = load_keyring(ori, settings.private_keys_dir)
    refused = 0

    def opened(event: dict) -> dict | None:
        nonlocal refused
        try:
            return open_shared(event, keyring, settings.index_keep_encrypted)
        except DecryptionError:
            refused += 1
            return None

    changed = import_index(settings, ori, args.source, opened)
    print(f"imported into {ori}'s index: {changed:,} rows changed", end="")
    print(f"; {refused:,} records whose sealed fields do not open with its keys" if refused else "")
    return 0


def _agreements_check(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.policycheck import findings

    registry, policy = _registry_and_policy(settings)
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

    registry, policy = _registry_and_policy(settings)
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
    admin = wait_for_broker(settings.bootstrap_servers)
    for future in admin.create_acls(acls.to_bindings(wanted)).values():
        future.result()  # raises with the broker's reason, e.g. no authorizer configured
    print(f"applied {len(wanted)} ACLs to {settings.bootstrap_servers}")
    return 0


def _keys_generate(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.crypto import generate_keypair

    ori = _registry_and_policy(settings)[0].get(args.agency).ori
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
    from mutualaid.auditlog import generate_stage_key

    try:
        public = generate_stage_key(settings, args.stage)
    except FileExistsError:
        print(f"mutualaid keys: {args.stage} has an audit key; not overwritten", file=sys.stderr)
        return 1
    print(f"audit key for {args.stage} created; verifiers need {public}")
    return 0


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 if every record checks out, 4 if any is forged, altered, missing or reordered."""
    from mutualaid.auditlog import verify
    from mutualaid.kafka import wait_for_broker
    from mutualaid.topics import AUDIT_DISSEMINATION, AUDIT_SEARCH

    wait_for_broker(settings.bootstrap_servers)
    broken = False
    for topic in args.topic or [AUDIT_DISSEMINATION, AUDIT_SEARCH]:
        report = verify(settings, topic, args.stream)
        chains = ", ".join(f"{w} to seq {n}" for w, n in sorted(report.writers.items()))
        print(f"{topic}: {report.records} record(s); chains: {chains or 'none'}")
        for line in report.gaps:
            print(f"  gap: {line}")
        for line in report.problems:
            print(f"  {line}")
        print(f"  {'intact' if report.intact else 'NOT INTACT'}")
        broken = broken or not report.intact
    return 4 if broken else 0


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


if __name__ == "__main__":
    sys.exit(main())
