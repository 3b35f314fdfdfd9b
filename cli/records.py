"""What an agency does with the records it holds: ``search`` (audited), ``export``, ``import``
and its public ``transparency`` report."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import registry_and_policy, when
from mutualaid.errors import EXIT_CONFIG, Refused
from mutualaid.settings import Settings
from mutualaid.topics import RECORD_KINDS

if TYPE_CHECKING:  # the stages are imported only by the command that runs them
    from consumers.index.query import Hit


def register(sub: argparse._SubParsersAction) -> None:
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

    export = sub.add_parser(
        "export",
        help="write everything an agency has to a folder, in open formats (Avro, NDJSON)",
        description="Its own records, the records partners shared with it, the dissemination "
        "audit of its records, its search log, its agreements and registry entries, with a "
        "manifest of counts and SHA-256 checksums.",
    )
    export.add_argument("--agency", required=True, help="ORI of the agency")
    export.add_argument("--out", required=True, type=Path, help="folder to write (created)")
    export.add_argument("--since", type=when, help="only what occurred at or after (ISO 8601)")
    export.add_argument("--until", type=when, help="only what occurred before (ISO 8601)")
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
    transparency.add_argument("--since", type=when, help="only what happened at or after")
    transparency.add_argument("--until", type=when, help="only what happened before")
    transparency.set_defaults(handler=_transparency)


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
            shown = hit.shown() | {"occurred_at": hit.occurred_at.isoformat()}
            print(json.dumps(shown | {"pointer": hit.pointer_message()}))
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


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.export import Exporter, Window
    from mutualaid.kafka import wait_for_broker

    registry, policy = registry_and_policy(settings)
    ori = registry.get(args.agency).ori
    wait_for_broker(settings)
    window = Window(args.since, args.until)
    Exporter(settings, registry, policy, ori, args.out, window).run()
    return 0


def _transparency(settings: Settings, args: argparse.Namespace) -> int:
    from consumers import transparency, transparency_page
    from consumers.export import Window
    from mutualaid.kafka import wait_for_broker

    registry, policy = registry_and_policy(settings)
    ori = registry.get(args.agency).ori
    wait_for_broker(settings)
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
