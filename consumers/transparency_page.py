"""The transparency report as one static HTML page (inline CSS and SVG charts, no external
assets, no script) and its JSON, written to a folder or served by the API.

The page is drawn only from the report's data (``consumers.transparency.report``), so it
can hold nothing the JSON does not; every value is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from consumers.transparency import kind_words

COLOURS = {"shared": "#2b6cb0", "pointer": "#68a0d8", "denied": "#c05621", "withdrawn": "#718096"}
BAR_LABEL_WIDTH = 220
BAR_WIDTH = 420
ROW = 26

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1a202c; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #cbd5e0; }
.lede { color: #4a5568; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; padding: 0; list-style: none; }
.figures li { background: #edf2f7; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.figures b { display: block; font-size: 1.6rem; }
table { border-collapse: collapse; width: 100%; margin: .8rem 0; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e2e8f0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.agreement { border: 1px solid #cbd5e0; border-radius: 6px; padding: .4rem 1rem; margin: 1rem 0; }
.agreement h3 { margin: .4rem 0; font-size: 1.05rem; }
.legend span { display: inline-block; margin-right: 1rem; }
.legend i { display: inline-block; width: .9rem; height: .9rem; margin-right: .3rem;
            vertical-align: -2px; }
small, .notes { color: #4a5568; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def bar_chart(title: str, rows: Sequence[tuple[str, dict[str, int]]], series: list[str]) -> str:
    """Horizontal (stacked) bars, one row per label; ``series`` names each segment's colour
    in ``COLOURS``, or one series drawn in the first colour."""
    if not rows:
        return ""
    top = max(sum(values.values()) for _, values in rows) or 1
    height = ROW * len(rows) + 8
    width = BAR_LABEL_WIDTH + BAR_WIDTH + 60
    spoken = "; ".join(
        f"{label}: " + ", ".join(f"{values.get(s, 0)} {s}" for s in series)
        for label, values in rows
    )
    parts = [
        f'<svg role="img" aria-label="{_e(title)}: {_e(spoken)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" class="chart">',
        f"<title>{_e(title)}</title>",
    ]
    for i, (label, values) in enumerate(rows):
        y = 4 + i * ROW
        parts.append(
            f'<text x="{BAR_LABEL_WIDTH - 8}" y="{y + 16}" text-anchor="end" '
            f'font-size="13">{_e(label)}</text>'
        )
        x = float(BAR_LABEL_WIDTH)
        for s in series:
            n = values.get(s, 0)
            if not n:
                continue
            w = BAR_WIDTH * n / top
            colour = COLOURS.get(s, "#2b6cb0")
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{ROW - 8}" '
                f'fill="{colour}"><title>{_e(label)}: {n} {_e(s)}</title></rect>'
            )
            x += w
        total = sum(values.values())
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 16}" font-size="13">{total}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: list[str]) -> str:
    return (
        '<p class="legend">'
        + "".join(f'<span><i style="background:{COLOURS[s]}"></i>{_e(s)}</span>' for s in series)
        + "</p>"
    )


def _names(agencies: list[dict[str, str]]) -> str:
    return ", ".join(_e(a["name"]) for a in agencies) or "none"


def _agreement(a: dict[str, Any]) -> str:
    fields = a["fields"]
    terms = [
        f"<li>Partners: {_names(a['partners'])}"
        + (f" (and every agency that is {_e(', '.join(a['partner_classes']))})"
           if a["partner_classes"] else "")
        + "</li>",
        f"<li>What: {_e(', '.join(kind_words(k) for k in a['kinds']))}</li>",
        "<li>How much: "
        + ("full records" if a["tier"] == "full" else "pointers only: that a record exists "
           "and whom to call")
        + "</li>",
    ]  # fmt: skip
    for group, words in (
        ("withheld", "Fields never sent"),
        ("masked", "Fields masked"),
        ("hashed", "Fields sent only as a keyed hash"),
        ("encrypted", "Fields sent encrypted (opened only by users allowed to)"),
    ):
        if fields[group]:
            terms.append(f"<li>{words}: {_e(', '.join(fields[group]))}</li>")
    for condition in a["conditions"]:
        terms.append(f"<li>{_e(condition)}</li>")
    allowed = a["protected_labels_allowed"]
    terms.append(
        "<li>Protected records ("
        + _e(", ".join(a["protected_labels_never_shared"]))
        + "): never shared"
        + (f"; allowed by name: {_e(', '.join(allowed))}" if allowed else "")
        + "</li>"
    )
    terms.append(
        "<li>Retention: "
        + (
            f"partners delete each record {a['retention_days']} days after it occurred"
            if a["retention_days"]
            else "no limit set by this agreement"
        )
        + "</li>"
    )
    description = f"<p>{_e(a['description'])}</p>" if a["description"] else ""
    return (
        f'<div class="agreement"><h3>{_e(a["id"])} <small>version {a["version"]}</small></h3>'
        f"{description}<ul>{''.join(terms)}</ul></div>"
    )


def _table(head: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    def cell(tag: str, i: int, v: object) -> str:
        cls = ' class="n"' if i >= numeric_from else ""
        return f"<{tag}{cls}>{_e(v)}</{tag}>"

    return (
        "<table><thead><tr>"
        + "".join(cell("th", i, h) for i, h in enumerate(head))
        + "</tr></thead><tbody>"
        + "".join(
            "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows
        )
        + "</tbody></table>"
    )


def _period(report: dict[str, Any]) -> str:
    since, until = report["period"]["since"], report["period"]["until"]
    if since is None and until is None:
        return "all time recorded"
    return f"{since or 'the beginning'} to {until or 'now'}"


def render(report: dict[str, Any], json_href: str = "report.json") -> str:
    """The page for one report; ``json_href`` links the same report as JSON."""
    agency = report["agency"]
    sharing, searches = report["sharing"], report["searches_by_partners"]
    hits, held = report["hotlist_hits"], report["still_held"]
    totals = sharing["totals"]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Transparency report: {_e(agency['name'])}</title><style>{STYLE}</style>",
        "</head><body><main>",
        f"<h1>Transparency report: {_e(agency['name'])}</h1>",
        f"<p class='lede'>ORI {_e(agency['ori'])}. Period: {_e(_period(report))}. "
        f"Generated {_e(report['generated_at'])}. What this agency shares with other agencies, "
        "on what terms, and how they used it. No names, plates, case numbers or search "
        "terms are published here.</p>",
        "<ul class='figures'>",
        f"<li><b>{totals['shared']}</b>records shared</li>",
        f"<li><b>{totals['pointer']}</b>pointers sent</li>",
        f"<li><b>{totals['denied']}</b>shares refused</li>",
        f"<li><b>{totals['withdrawn']}</b>withdrawals</li>",
        f"<li><b>{searches['total']}</b>partner searches that found its records</li>",
        f"<li><b>{hits['reads'] + hits['entries']}</b>records sent in hotlist alerts</li>",
        "</ul>",
        "<h2 id='agreements'>Agreements in force</h2>",
    ]
    shares = report["agreements"]["shares"]
    if shares:
        for a in shares:
            out.append(f"<p>{_e(a['summary'])}</p>")
        out += [_agreement(a) for a in shares]
    else:
        out.append("<p>This agency shares no records under any agreement.</p>")
    receives = report["agreements"]["receives"]
    if receives:
        out.append("<p>It receives records under: ")
        out.append(
            "; ".join(
                f"{_e(r['id'])} from {_e(r['owner']['name'])} "
                f"({_e(', '.join(kind_words(k) for k in r['kinds']))})"
                for r in receives
            )
            + ".</p>"
        )
    out.append("<h2 id='rules'>Rules that apply</h2>")
    rules = report["rules"]
    if not rules["defined"]:
        out.append("<p>No region-wide rules are defined beyond the agreements above.</p>")
    elif rules["rules"]:
        out.append(
            "<ul>"
            + "".join(
                f"<li><strong>{_e(r['citation'])}</strong>: {_e(r['description'])}</li>"
                for r in rules["rules"]
            )
            + "</ul>"
        )
    else:
        out.append("<p>None of the region's rules applies to this agency's records.</p>")

    out.append("<h2 id='sharing'>Records shared, by partner</h2>")
    by_partner: dict[str, dict[str, int]] = {}
    for row in sharing["by_partner_and_kind"]:
        slot = by_partner.setdefault(row["partner"]["name"], {})
        for s in COLOURS:
            slot[s] = slot.get(s, 0) + row[s]
    series = list(COLOURS)
    if by_partner:
        out.append(_legend(series))
        out.append(bar_chart("Decisions per partner", sorted(by_partner.items()), series))
        out.append(
            _table(
                ["Partner", "Kind", "Shared", "Pointers", "Refused", "Withdrawn"],
                [
                    [
                        r["partner"]["name"],
                        kind_words(r["kind"]),
                        r["shared"],
                        r["pointer"],
                        r["denied"],
                        r["withdrawn"],
                    ]
                    for r in sharing["by_partner_and_kind"]
                ],
                numeric_from=2,
            ).replace("<table>", "<table id='partners'>", 1)
        )
    else:
        out.append("<p>No sharing decisions in this period.</p>")

    out.append("<h2 id='searches'>Searches by partners that found its records</h2>")
    if searches["total"]:
        rows = [(c, {"searches": n}) for c, n in searches["by_category"].items() if n]
        out.append(bar_chart("Searches by stated purpose", rows, ["searches"]))
        out.append(
            _table(
                ["Partner", *searches["categories"], "Total"],
                [
                    [p["partner"]["name"], *p["by_category"].values(), p["total"]]
                    for p in searches["by_partner"]
                ],
            )
        )
    else:
        out.append("<p>No partner search found its records in this period.</p>")

    out.append("<h2 id='hits'>Hotlist hits</h2>")
    if hits["by_center"]:
        out.append(
            _table(
                ["Dispatch center alerted", "Record", "Records sent in alerts"],
                [
                    [h["center"]["name"], kind_words(h["kind"]), h["records"]]
                    for h in hits["by_center"]
                ],
                numeric_from=2,
            )
        )
    else:
        out.append("<p>No hit alert sent a partner its reads or hotlist entries.</p>")

    out.append("<h2 id='held'>What partners still hold</h2>")
    if held["records"]:
        out.append(
            f"<p>{held['records']} record(s) shared and not withdrawn; the oldest was shared "
            f"{_e(held['oldest_shared_at'])}.</p>"
        )
        out.append(
            _table(
                ["Partner", "Kind", "Records", "Oldest shared"],
                [
                    [
                        h["partner"]["name"],
                        kind_words(h["kind"]),
                        h["records"],
                        h["oldest_shared_at"],
                    ]
                    for h in held["by_partner_and_kind"]
                ],
                numeric_from=2,
            )
        )
    else:
        out.append("<p>No partner holds any of its records.</p>")
    out.append("<h2 id='notes'>How these figures are made</h2><ul class='notes'>")
    out += [f"<li>{_e(n)}</li>" for n in report["notes"]]
    out.append("</ul>")
    out.append(f"<p><a href='{_e(json_href)}'>This report as JSON</a></p></main></body></html>")
    return "\n".join(out)


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """``index.html`` and ``report.json`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    page, data = out / "index.html", out / "report.json"
    page.write_text(render(report))
    data.write_text(json.dumps(report, indent=2) + "\n")
    return [page, data]
