"""The HTTP search API an agency runs over its own index: ``GET /search``, with OpenAPI, and
the analyst's search page at ``/``.

Programs authenticate with a bearer token issued by ``mutualaid api-user add``
(``mutualaid.tokens``); people sign in on the page with the same token once and then hold a
server-side session (``consumers.sessions``). Every search, and every CSV download of results,
goes through a ``consumers.search.Searcher``: the same refusals and the same audit as the
command line, with the index kept open between searches.
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at run time,
# including ones that name local dependencies.

import csv
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

from confluent_kafka import KafkaException
from fastapi import Cookie, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from consumers.index import IndexUnavailable
from consumers.index.query import Criteria, Hit
from consumers.search import Searcher, SearchRefused, SearchRequest, log, parse_near
from consumers.sessions import Sessions, login_limits, page_with_login
from consumers.transparency import Reports
from consumers.transparency_page import render as render_report
from mutualaid import tokens
from mutualaid.agencies import Agency, Registry
from mutualaid.configfile import ConfigError
from mutualaid.settings import Settings
from mutualaid.topics import Kind, check_ori


class Result(BaseModel):
    source_ori: str
    source_agency: str
    kind: str
    record_id: str
    record_ref: str  # quote it to the owner to ask for the record itself
    version: int
    occurred_at: datetime
    tier: str
    contact: str | None
    body: dict | None
    encrypted_fields: list[str]  # held encrypted, null in body; reveal=true opens them
    own: bool  # the agency's own record (its own source topics), not a partner's


PAGE = Path(__file__).parent / "search_page.html"
SESSION_COOKIE = "mutualaid_search"
CSV_COLUMNS = ("occurred_at", "source_ori", "source_agency", "kind", "record_id", "version",
               "tier", "contact", "latitude", "longitude", "body_json")  # fmt: skip


class Login(BaseModel):
    user: str
    token: str


class SearchResponse(BaseModel):
    agency_ori: str
    user: str
    reason: str
    count: int
    results: list[Result]


def create_api(settings: Settings, agency: Agency, registry: Registry) -> FastAPI:
    searcher = Searcher(settings, agency.ori)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        searcher.close()

    api = FastAPI(
        lifespan=lifespan,
        title=f"mutualaid search: {agency.name} ({agency.ori})",
        description="Search the agency's own records and those partner agencies share with it. "
        "Every search "
        "needs a reason (a case or incident number) and is audited.",
        version="1",
    )
    bearer = HTTPBearer(auto_error=False)
    names = {a.ori: a.name for a in registry.agencies}

    sessions = Sessions(settings.api_users_file, agency.ori, login_limits(settings), log)

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        mutualaid_search: Annotated[str | None, Cookie()] = None,
    ) -> tokens.Holder:
        # Read on every call, so a user added or removed takes effect without a restart.
        if credentials is not None:
            holder = tokens.find(settings.api_users_file, agency.ori, credentials.credentials)
        else:
            holder = sessions.holder(mutualaid_search)
        if holder is None:
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return holder

    def searching(download: str | None):
        """A dependency that runs one audited search from the request's parameters, giving
        (user, reason, hits); with ``download``, the log notes the results left as a file."""

        def searched(
            holder: Annotated[tokens.Holder, Depends(caller)],
            reason: Annotated[str, Query(description="case or incident number: required")] = "",
            plate: Annotated[
                str | None, Query(description="misread-tolerant; * ? wildcards")
            ] = None,
            name: Annotated[str | None, Query(description='"last" or "first last"')] = None,
            dob: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
            incident: Annotated[str | None, Query(description="incident or report number")] = None,
            text: Annotated[str | None, Query(description="words anywhere in the record")] = None,
            identifier: Annotated[
                str | None, Query(description="licence, SSN, VIN...; also where shared encrypted")
            ] = None,
            near: Annotated[str | None, Query(description="LAT,LON,KM")] = None,
            since: datetime | None = None,
            until: datetime | None = None,
            from_agency: Annotated[str | None, Query(description="owner ORI")] = None,
            kind: Kind | None = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
            reveal: Annotated[
                bool, Query(description="open fields the index keeps encrypted (logged)")
            ] = False,
        ) -> tuple[str, str, list[Hit]]:
            user = holder.name
            if reveal and "reveal" not in holder.grants:
                raise HTTPException(
                    403,
                    f"{user} may not reveal encrypted fields; an administrator can issue a "
                    f"token with `mutualaid api-user add --agency {agency.ori} --user {user} "
                    "--may-reveal`",
                )
            try:
                criteria = Criteria(
                    plate=plate or None,
                    name=name or None,
                    dob=dob or None,
                    incident_number=incident or None,
                    text=text or None,
                    identifier=identifier or None,
                    near=parse_near(near or None),
                    since=since,
                    until=until,
                    source_ori=check_ori(from_agency) if from_agency else None,
                    kind=str(kind) if kind else None,
                    limit=limit,
                )
                request = SearchRequest(agency.ori, user, reason, criteria, reveal, download)
                hits = searcher.search(request)
            except (SearchRefused, ValueError) as exc:
                raise HTTPException(400, f"refused: {exc}") from None
            except IndexUnavailable as exc:
                raise HTTPException(503, f"the index is unavailable: {exc}") from None
            return user, reason, hits

        return searched

    Found = tuple[str, str, list[Hit]]

    @api.get("/search", response_model=SearchResponse)
    def search(found: Annotated[Found, Depends(searching(None))]) -> SearchResponse:
        user, reason, hits = found
        return SearchResponse(
            agency_ori=agency.ori,
            user=user,
            reason=reason,
            count=len(hits),
            results=[_result(h, names) for h in hits],
        )

    @api.get("/search.csv", response_class=Response)
    def search_csv(found: Annotated[Found, Depends(searching("csv"))]) -> Response:
        """The results of a search as CSV: the same parameters, and itself a logged search."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for hit in found[2]:
            r = _result(hit, names)
            body = r.body or {}
            writer.writerow(
                [r.occurred_at.isoformat(), r.source_ori, r.source_agency, r.kind, r.record_id,
                 r.version, r.tier, r.contact or "", body.get("latitude", ""),
                 body.get("longitude", ""), json.dumps(body, sort_keys=True, default=str)]
            )  # fmt: skip
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="mutualaid-search.csv"'},
        )

    page = page_with_login(PAGE, agency, "Sign in", "Sign in")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @api.post("/login", include_in_schema=False)
    def login(credentials: Login, request: Request, response: Response) -> dict:
        who = f"a user of {agency.name}"
        sessions.login(credentials.user, credentials.token, request, response, SESSION_COOKIE, who)
        return {"user": credentials.user, "agency": agency.ori}

    @api.post("/logout", include_in_schema=False)
    def logout(
        response: Response, mutualaid_search: Annotated[str | None, Cookie()] = None
    ) -> dict:
        sessions.close(mutualaid_search)
        response.delete_cookie(SESSION_COOKIE)
        return {}

    @api.get("/me", include_in_schema=False)
    def me(holder: Annotated[tokens.Holder, Depends(caller)]) -> dict:
        return {
            "user": holder.name,
            "agency": agency.ori,
            "may_reveal": "reveal" in holder.grants,
        }

    @api.get("/agencies")
    def agencies(holder: Annotated[tokens.Holder, Depends(caller)]) -> list[dict]:
        """The registry's agencies: names, jurisdictions (for plotting) and whom to call."""
        return [
            {
                "ori": a.ori,
                "name": a.name,
                "contact": a.contact,
                "jurisdiction": a.jurisdiction.model_dump() if a.jurisdiction else None,
            }
            for a in registry.agencies
        ]

    # The transparency reports are public: no sign-in, and any agency of the region's.
    reports = Reports(settings, registry)

    @api.get("/transparency/{name}", response_class=HTMLResponse, include_in_schema=False)
    def transparency(name: str) -> Response:
        ori, as_json = (name[: -len(".json")], True) if name.endswith(".json") else (name, False)
        try:
            report = reports.get(ori)
        except (KeyError, ValueError):
            raise HTTPException(404, f"{ori} is not an agency of this region") from None
        except ConfigError as exc:
            raise HTTPException(503, f"the agreements do not load: {exc}") from None
        except KafkaException as exc:
            raise HTTPException(503, f"the audit topics cannot be read now: {exc}") from None
        if as_json:
            return Response(json.dumps(report, indent=2), media_type="application/json")
        return HTMLResponse(render_report(report, json_href=f"{report['agency']['ori']}.json"))

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "agency_ori": agency.ori}

    return api


def _result(hit: Hit, names: dict[str, str]) -> Result:
    return Result(
        **hit.shown(),
        source_agency=names.get(hit.source_ori, ""),
        record_ref=f"{hit.source_ori}/{hit.kind}/{hit.record_id}",
    )
