"""Routes: the API's interactive documentation, served with no internet.

- ``GET /docs``: Swagger UI (5, which renders OpenAPI 3.1) over ``/openapi.json``.
- ``/docs/static/...``: Swagger UI's own files, from the pinned ``fastapi-offline``
  package's static folder (no CDN, no font or favicon from elsewhere, no online
  validator badge).

Not in the OpenAPI document (FastAPI's own ``/docs`` and ``/redoc``, which load from a
CDN, are turned off in `sync_server.app`).
"""

from __future__ import annotations

import html
import json
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_PATH", "STATIC_PATH", "install_docs"]

DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"
# Swagger UI's files as the pinned fastapi-offline ships them (its own code is not used).
_ASSETS = str(files("fastapi_offline") / "static")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="stylesheet" type="text/css" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: {openapi_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
</script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at `DOCS_PATH` from the package's files under `STATIC_PATH`."""
    if app.openapi_url is None:
        return
    page = _PAGE.format(
        title=html.escape(f"{app.title} - API"),
        static=STATIC_PATH,
        openapi_url=json.dumps(app.openapi_url).replace("<", "\\u003c"),
    )
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=_ASSETS), name="swagger-ui")
