"""Routes: the API's interactive documentation, served with no internet.

- ``GET /docs``: Swagger UI over ``/openapi.json``. The pinned bundle is Swagger UI 4,
  which renders OpenAPI 3.0 only: the page relabels the 3.1 document it loads as 3.0
  for display (a response interceptor); ``/openapi.json`` itself is unchanged.
- ``/docs/static/...``: Swagger UI's own files, from the pinned ``swagger-ui-bundle``
  package (no CDN, no font or favicon from elsewhere, no online validator badge).

Not in the OpenAPI document (FastAPI's own ``/docs`` and ``/redoc``, which load from a
CDN, are turned off in `sync_server.app`).
"""

from __future__ import annotations

import html
import json

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

__all__ = ["DOCS_PATH", "STATIC_PATH", "install_docs"]

DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="stylesheet" type="text/css" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script>
// The bundled Swagger UI (4.x) renders OpenAPI 3.0 only: it is shown the document as
// 3.0 (the label alone; /openapi.json itself stays 3.1).
function asRenderable(response) {{
  if (response.url.endsWith({openapi_url}) && response.ok) {{
    const spec = JSON.parse(response.text);
    if (typeof spec.openapi === "string" && spec.openapi.startsWith("3.1")) {{
      spec.openapi = "3.0.3";
      response.text = response.data = JSON.stringify(spec);
      response.body = response.obj = spec;
    }}
  }}
  return response;
}}
window.ui = SwaggerUIBundle({{
  url: {openapi_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  responseInterceptor: asRenderable,
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
    app.mount(STATIC_PATH, StaticFiles(directory=swagger_ui_path), name="swagger-ui")
