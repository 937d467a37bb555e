"""GET /openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

from typing import Any

from control.web.endpoint import Auth, endpoint_of
from control.web.openapi import PAGE_TAGS


async def test_document_lists_every_route_and_nothing_else(client: Any) -> None:
    async with client.get("/openapi.json") as r:
        assert r.status == 200
        document = await r.json()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and endpoint_of(route.handler).tag not in PAGE_TAGS
    }
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert described == served  # the API: every route but the console's pages and files
    assert not any(path.startswith("/console") for path in document["paths"])
    assert document["openapi"].startswith("3.")


SECURITY = {
    Auth.BOOTSTRAP: [{"bootstrapToken": []}],
    Auth.PROXY: [{"proxyCredential": []}],
    Auth.SANDBOX: [{"sessionToken": []}],
    Auth.CANDIDATE: [{"candidateToken": []}],
    Auth.REPORT: [{"memberToken": []}, {"reportLink": []}],
    Auth.METRICS: [{"metricsToken": []}],
}


async def test_operations_carry_their_access_and_schemas(client: Any) -> None:
    async with client.get("/openapi.json") as r:
        document = await r.json()
    schemas = document["components"]["schemas"]
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        meta = endpoint_of(route.handler)
        if meta.tag in PAGE_TAGS:
            continue
        op = document["paths"][route.resource.canonical][route.method.lower()]
        assert op["summary"] == meta.summary
        assert str(meta.status) in op["responses"]
        if meta.auth is Auth.NONE:
            assert "security" not in op
        elif meta.auth is not Auth.MEMBER:
            assert op["security"] == SECURITY[meta.auth]
            assert "401" in op["responses"]
        else:
            assert op["x-roles"] == sorted(r.value for r in meta.access)
            assert "401" in op["responses"]
            assert "403" in op["responses"]
        if meta.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in schemas
    assert schemas["KeyUpload"]["required"] == ["api_key"]
