"""/v3/auth: issuing, validating and revoking tokens, and what a token may scope to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stratus.common.errors import BadRequest, NotFound, Unauthorized
from stratus.common.web import JSONResponse, dumps, empty, read_json
from stratus.identity.api.common import ctx, domain_view, enforce, flag, link, project_view


async def issue(request: Request):
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
        raise BadRequest("The request body must be an object with an 'auth' member.")
    tokens = request.app.state.tokens
    token, rendered = await tokens.authenticate(body["auth"])
    if flag(request, "nocatalog"):
        rendered = {"token": {k: v for k, v in rendered["token"].items() if k != "catalog"}}
    return Response(dumps(rendered), status_code=201, media_type="application/json",
                    headers={"X-Subject-Token": token})


def _subject(request: Request) -> str:
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise BadRequest("The X-Subject-Token header is required.")
    return subject


async def validate(request: Request):
    caller = ctx(request)
    subject = _subject(request)
    tokens = request.app.state.tokens
    allow_expired = flag(request, "allow_expired")
    nocatalog = flag(request, "nocatalog")
    if subject == caller.token or caller.is_admin or caller.has_role("service"):
        encoded = await tokens.validate_json(subject, allow_expired=allow_expired, nocatalog=nocatalog)
    else:
        body = await tokens.validate(subject, allow_expired=allow_expired, nocatalog=nocatalog)
        enforce(request, "identity:validate_token", user_id=body["token"]["user"]["id"])
        encoded = await tokens.validate_json(subject, allow_expired=allow_expired, nocatalog=nocatalog)
    if request.method == "HEAD":
        return Response(status_code=200, headers={"X-Subject-Token": subject})
    return Response(encoded, status_code=200, media_type="application/json", headers={"X-Subject-Token": subject})


async def revoke(request: Request):
    caller = ctx(request)
    subject = _subject(request)
    tokens = request.app.state.tokens
    data = await tokens.token_data(subject)
    if subject != caller.token:
        enforce(request, "identity:revoke_token", user_id=data.user_id)
    await tokens.revoke(subject)
    return empty(204)


async def catalog(request: Request):
    c = ctx(request)
    if c.project_id is None and not c.domain_id and not c.system_scope:
        raise Unauthorized("An unscoped token has no catalog; rescope it to a project first.")
    cat = await request.app.state.manager.catalog(c.project_id)
    return JSONResponse({"catalog": cat, "links": {"self": str(request.url)}})


async def projects(request: Request):
    c = ctx(request)
    mgr = request.app.state.manager
    items = [project_view(request, p) for p in await mgr.user_projects(c.user_id) if p.enabled]
    return JSONResponse({"projects": items, "links": {"self": str(request.url), "previous": None, "next": None}})


async def domains(request: Request):
    c = ctx(request)
    mgr = request.app.state.manager
    items = [domain_view(request, d) for d in await mgr.user_domains(c.user_id) if d.enabled]
    return JSONResponse({"domains": items, "links": {"self": str(request.url), "previous": None, "next": None}})


async def system(request: Request):
    c = ctx(request)
    roles = await request.app.state.manager.roles_for(c.user_id, "system", None)
    return JSONResponse({"system": [{"all": True}] if roles else [],
                         "links": {"self": str(request.url), "previous": None, "next": None}})


routes = [
    Route("/v3/auth/tokens", issue, methods=["POST"]),
    Route("/v3/auth/tokens", validate, methods=["GET", "HEAD"]),
    Route("/v3/auth/tokens", revoke, methods=["DELETE"]),
    Route("/v3/auth/catalog", catalog, methods=["GET"]),
    Route("/v3/auth/projects", projects, methods=["GET"]),
    Route("/v3/auth/domains", domains, methods=["GET"]),
    Route("/v3/auth/system", system, methods=["GET"]),
]
