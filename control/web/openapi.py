"""The OpenAPI document, generated from the route table and each route's Endpoint."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from control.web.endpoint import Auth, Endpoint, endpoint_of

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{([^}]+)\}")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}


def _schema_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


# What each kind of token-checked route declares: its security scheme and its 401/403s.
_Scheme = tuple[list[dict[str, list[str]]], dict[str, str]]
_AUTH_SCHEMES: dict[Auth, _Scheme] = {
    Auth.BOOTSTRAP: (
        [{"bootstrapToken": []}],
        {
            "401": "missing, invalid or already used bootstrap token",
            "403": "the session is not live or its key was revoked",
        },
    ),
    Auth.PROXY: (
        [{"proxyCredential": []}],
        {"401": "missing, invalid or superseded proxy credential"},
    ),
    Auth.SANDBOX: (
        [{"sessionToken": []}],
        {"401": "missing or invalid session token", "403": "the session is no longer live"},
    ),
    Auth.REPORT: (
        [{"memberToken": []}, {"reportLink": []}],
        {"401": "no member token, or an unknown or expired report link"},
    ),
    Auth.CANDIDATE: ([{"candidateToken": []}], {"401": "missing or invalid candidate token"}),
    Auth.METRICS: (
        [{"metricsToken": []}],
        {"401": "missing or wrong metrics token", "404": "metrics are off (no token set)"},
    ),
}
_MEMBER_SCHEME: _Scheme = (
    [{"memberToken": []}, {"operatorToken": []}],
    {"401": "missing or invalid API token", "403": "the member's role may not do this"},
)


_NO_SCHEME: _Scheme = ([], {})


def _parameters(path: str, meta: Endpoint) -> list[dict[str, Any]]:
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in _PATH_PARAM.findall(path)
    ]
    if meta.query is not None:
        properties = meta.query.model_json_schema()["properties"]
        for field, info in meta.query.model_fields.items():
            parameters.append(
                {
                    "name": field,
                    "in": "query",
                    "required": info.is_required(),
                    "description": info.description or "",
                    "schema": properties[field],
                }
            )
    return parameters


def _responses(
    meta: Endpoint, components: dict[str, Any], errors: dict[str, str], has_path: bool
) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if meta.response is not None:
        success["content"] = {
            "application/json": {"schema": _schema_ref(meta.response, components)}
        }
    responses: dict[str, Any] = {str(meta.status): success}
    if meta.body is not None or meta.query is not None:
        responses["422"] = _error("the request does not fit the schema")
    if meta.body is not None:
        responses["400"] = _error("the body is not JSON")
        responses["413"] = _error("the body is too large")
        responses["415"] = _error("the body is not application/json")
    responses.update({status: _error(text) for status, text in errors.items()})
    if has_path:
        responses["404"] = _error("no such object in this tenant")
    return responses


def _operation(name: str, path: str, meta: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": name, "summary": meta.summary, "tags": [meta.tag]}
    parameters = _parameters(path, meta)
    if parameters:
        op["parameters"] = parameters
    if meta.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema_ref(meta.body, components)}},
        }
    # A member route's token wins over any other its auth kind names.
    security, errors = (
        _MEMBER_SCHEME if not meta.public else _AUTH_SCHEMES.get(meta.auth, _NO_SCHEME)
    )
    if security:
        op["security"] = security
    if not meta.public:
        op["x-roles"] = sorted(role.value for role in meta.access)
    has_path = any(p["in"] == "path" for p in parameters)
    op["responses"] = _responses(meta, components, errors, has_path)
    return op


PAGE_TAGS = frozenset({"console", "static"})


def build_openapi(app: web.Application) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        meta = endpoint_of(route.handler)
        if meta is None:
            continue  # undeclared routes are refused at run time; a test forbids them
        if meta.tag in PAGE_TAGS:
            continue  # the console's pages and files are not the API
        path = route.resource.canonical
        name = getattr(route.handler, "__name__", path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(name, path, meta, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metrux control plane",
            "version": "1",
            "description": 'Errors are {"error": {"type", "message"}} with the HTTP status.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "memberToken": {"type": "http", "scheme": "bearer", "description": "mxk_… token"},
                "sessionToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mxs_… the candidate's session token",
                },
                "bootstrapToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mxb_… single-use proxy bootstrap token",
                },
                "proxyCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mxp_… an attached proxy's credential, from its attach grant",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the scraper's METRUX_METRICS_TOKEN",
                },
                "candidateToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mxc_… the candidate's own token, from accepting an invite",
                },
                "reportLink": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access",
                    "description": "mxr_… from POST /v1/sessions/{id}/report-link; traded "
                    "for a cookie scoped to the report on first use",
                },
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mxo_… platform operator: GET only, with X-Metrux-Tenant; "
                    "every read is audited in that tenant's log",
                },
            },
        },
    }
