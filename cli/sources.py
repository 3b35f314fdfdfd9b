"""Getting agencies' records in: ``connect`` (files, drop directories, SQL tables, cameras
pushing over HTTP), ``camera`` tokens and ``hotlist``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from cli.common import agency, stop_event
from cli.tokens import token_commands
from mutualaid.errors import UsageError
from mutualaid.settings import Settings
from mutualaid.topics import Kind


def register(sub: argparse._SubParsersAction) -> None:
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

    token_commands(
        sub, "camera", "cameras that push reads over HTTP", "cameras_file", "camera",
        "the id the camera's reads carry", positional=True,
        display_name="where the camera is, e.g. 'Main St & Pioneer Trl'; given to its reads "
        "that name no place themselves",
    )  # fmt: skip

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
    wait_for_broker(settings)
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
        progress = runner.run(stop=stop_event(), follow=args.follow)
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
    wait_for_broker(settings)
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


def _hotlist_load(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import load_extract

    try:  # ExtractError: main reports it
        report = load_extract(settings, agency(settings, args.agency), args.file)
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
    record_id = add_bolo(settings, agency(settings, args.agency), fields, record_id=args.id)
    print(record_id)
    return 0


def _hotlist_remove(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import remove_entry

    if remove_entry(settings, agency(settings, args.agency), args.id):
        print(f"removed {args.id}")
        return 0
    print(f"mutualaid hotlist remove: {args.agency} has no entry {args.id}", file=sys.stderr)
    return 1


def _hotlist_list(settings: Settings, args: argparse.Namespace) -> int:
    from producers.hotlist import current_entries

    now = datetime.now(UTC)
    for record_id, event in sorted(
        current_entries(settings, agency(settings, args.agency)).items()
    ):
        e = event["body"]
        expires = e["expires_at"]
        status = "EXPIRED" if expires is not None and expires <= now else "active"
        until = f"until {expires:%Y-%m-%d %H:%M}Z" if expires else "no expiry"
        state = e["plate_state"] or "--"
        print(f"{record_id:24} {e['plate']:10} {state:3} {e['reason']:17} {status:8} {until}")
    return 0
