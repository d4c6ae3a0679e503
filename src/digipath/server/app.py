"""The FastAPI application: API routers, pages, static files, errors, security headers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from digipath.errors import DigipathError
from digipath.server.db import Database
from digipath.server.runner import JobRunner
from digipath.server.settings import ServerSettings
from digipath.server.uploads import UploadTooLarge

__all__ = ["API", "create_app", "openseadragon_folder", "vendor_folder"]

logger = logging.getLogger(__name__)

API = "/api/v1"
HERE = Path(__file__).parent
FRONTEND = HERE / "frontend"

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


VENDOR = {
    "openseadragon": ("openseadragon/build/openseadragon", "openseadragon.min.js"),
    "swagger-ui": ("swagger-ui-dist", "swagger-ui-bundle.js"),
}
"""Front-end packages installed from npm by the set-up (``make venv``): URL name -> (folder
under ``frontend/node_modules``, a file that must be there)."""


def vendor_folder(name: str) -> Path | None:
    """The folder of the npm package served as ``/vendor/<name>``, if it is installed."""
    folder, probe = VENDOR[name]
    path = FRONTEND / "node_modules" / folder
    return path if (path / probe).is_file() else None


def openseadragon_folder() -> Path | None:
    """The OpenSeadragon build (the slide viewer's), if installed."""
    return vendor_folder("openseadragon")


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


class Guard:
    """ASGI middleware: refuse state-changing requests from another site (``Origin``), and add
    the security headers (and the Content-Security-Policy, but on the Swagger UI page, which
    starts with an inline script) to every answer.

    A plain ASGI class rather than ``@app.middleware("http")``: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin and urlsplit(origin).netloc != headers.get(b"host", b"").decode("latin-1"):
                response = JSONResponse({"detail": f"cross-site request from {origin}"}, 403)
                await response(scope, receive, send)
                return
        policy = scope["path"] != f"{API}/docs"

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                if policy and b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: ServerSettings | None = None, *, run_jobs: bool = True) -> FastAPI:
    """Build the application.

    Parameters
    ----------
    settings
        The configuration (default: :class:`ServerSettings` defaults).
    run_jobs
        Start the job runner with the application (tests of the API alone may not).
    """
    settings = settings or ServerSettings()
    settings.folder()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from digipath.server.properties import ensure_fixtures

        database = Database(settings.url)
        with database.session() as session:
            ensure_fixtures(session)
        app.state.database = database
        app.state.runner = JobRunner(settings, database)
        if run_jobs:
            app.state.runner.start()
        logger.info("digipath server: data in %s, database %s", settings.data_dir,
                    database.engine.url.render_as_string(hide_password=True))  # fmt: skip
        try:
            yield
        finally:
            app.state.runner.close()
            database.dispose()

    app = FastAPI(
        title="digipath",
        summary="Deep learning on whole-slide pathology images: datasets, models, jobs.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
    )
    app.state.settings = settings

    app.add_middleware(Guard)

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, error: UploadTooLarge):
        return JSONResponse({"detail": str(error)}, status_code=413)

    @app.exception_handler(DigipathError)
    async def refused(request: Request, error: DigipathError):
        return JSONResponse({"detail": str(error)}, status_code=422)

    from digipath.server.api import accounts, datasets, jobs, projects, properties, viewer, weights

    for module in (accounts, projects, datasets, weights, properties, jobs, viewer):
        app.include_router(module.router, prefix=API)

    from digipath.server import pages

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for name in VENDOR:
        folder = vendor_folder(name)
        if folder is not None:
            app.mount(f"/vendor/{name}", StaticFiles(directory=folder), name=f"vendor-{name}")

    @app.get(f"{API}/docs", include_in_schema=False)
    def docs():
        """The OpenAPI page (Swagger UI from npm; the JSON is at ``/api/v1/openapi.json``)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        if vendor_folder("swagger-ui") is None:
            return JSONResponse(
                {"detail": "Swagger UI is not installed (make venv); see /api/v1/openapi.json"},
                status_code=404,
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title="digipath API",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )  # fmt: skip

    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("digipath")
    except Exception:
        return "0"
