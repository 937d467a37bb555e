"""The console's own static files, served from the package (no CDN, no other origin)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from control.web.endpoint import PUBLIC, endpoint

routes = web.RouteTableDef()
STATIC = Path(__file__).with_name("static")
_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Only the files shipped here, by name, read once: nothing else on disk is reachable.
FILES = {p.name: (p.read_bytes(), _TYPES[p.suffix]) for p in STATIC.iterdir() if p.suffix in _TYPES}


@routes.get("/console/static/{name}")
@endpoint("A console stylesheet or script", access=PUBLIC, tag="static")
async def static_file(request: web.Request) -> web.Response:
    found = FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
