"""The HTTP search API an agency runs over its own index: ``GET /search``, with OpenAPI.

Callers authenticate with a bearer token issued by ``mutualaid api-user add``
(``mutualaid.tokens``). Every search goes through a ``consumers.search.Searcher``: the same
refusals and the same audit as the command line, with the index kept open between searches.
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at run time,
# including ones that name local dependencies.

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from consumers.index import IndexUnavailable
from consumers.query import Criteria, Hit
from consumers.search import Searcher, SearchRefused, SearchRequest, parse_near
from mutualaid import tokens
from mutualaid.agencies import Agency, Registry
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
        description="Search the records partner agencies share with this agency. Every search "
        "needs a reason (a case or incident number) and is audited.",
        version="1",
    )
    bearer = HTTPBearer(auto_error=False)
    names = {a.ori: a.name for a in registry.agencies}

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> tokens.Holder:
        # Read on every call, so a user added or removed takes effect without a restart.
        holder = tokens.find(
            settings.api_users_file, agency.ori, credentials.credentials if credentials else None
        )
        if holder is None:
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return holder

    @api.get("/search", response_model=SearchResponse)
    def search(
        holder: Annotated[tokens.Holder, Depends(caller)],
        reason: Annotated[str, Query(description="case or incident number: required")] = "",
        plate: Annotated[str | None, Query(description="misread-tolerant; * ? wildcards")] = None,
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
    ) -> SearchResponse:
        user = holder.name
        if reveal and "reveal" not in holder.grants:
            raise HTTPException(
                403,
                f"{user} may not reveal encrypted fields; an administrator can issue a token "
                f"with `mutualaid api-user add --agency {agency.ori} --user {user} --may-reveal`",
            )
        try:
            criteria = Criteria(
                plate=plate,
                name=name,
                dob=dob,
                incident_number=incident,
                text=text,
                identifier=identifier,
                near=parse_near(near),
                since=since,
                until=until,
                source_ori=check_ori(from_agency) if from_agency else None,
                kind=str(kind) if kind else None,
                limit=limit,
            )
            request = SearchRequest(agency.ori, user, reason, criteria, reveal)
            hits = searcher.search(request)
        except (SearchRefused, ValueError) as exc:
            raise HTTPException(400, f"refused: {exc}") from None
        except IndexUnavailable as exc:
            raise HTTPException(503, f"the index is unavailable: {exc}") from None
        return SearchResponse(
            agency_ori=agency.ori,
            user=user,
            reason=reason,
            count=len(hits),
            results=[_result(h, names) for h in hits],
        )

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "agency_ori": agency.ori}

    return api


def _result(hit: Hit, names: dict[str, str]) -> Result:
    return Result(
        source_ori=hit.source_ori,
        source_agency=names.get(hit.source_ori, ""),
        kind=hit.kind,
        record_id=hit.record_id,
        record_ref=f"{hit.source_ori}/{hit.kind}/{hit.record_id}",
        version=hit.version,
        occurred_at=hit.occurred_at,
        tier=hit.tier,
        contact=hit.contact,
        body=hit.body,
        encrypted_fields=list(hit.encrypted_fields),
    )
