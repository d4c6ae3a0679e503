"""Server-rendered pages: thin HTML shells (Jinja2, autoescaped) whose scripts call the API.

Every page action is a ``fetch`` of the ``/api/v1`` endpoints from the page's script in
``static/`` (the Content-Security-Policy allows no inline script or style), sending the
session's CSRF token that the templates put in ``<meta name="csrf-token">``. Names coming
from users are shown either escaped by Jinja2 or with ``textContent`` in the scripts, never
as HTML.

The pages:

``/login``, ``/register``, ``/reset-password``, ``/logout``
    accounts (anonymous pages, except ``/logout``);
``/``
    the projects list and "Create project";
``/projects/{id}``
    the project page: uploads, the Train / Inference / Inference single / Whole slide tabs
    with the properties table, project info and members;
``/notifications``
    the searchable, paginated jobs table (``?project_id=`` for one project), with Stop;
``/jobs/{id}``
    a job's status, settings, training curves, log and results;
``/jobs/{id}/viewer``, ``/datasets/{id}/samples/{index}/viewer``
    the OpenSeadragon slide viewer (with the output map of a whole-slide job);
``/account``
    password, API tokens, account deletion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from digipath.server.deps import (
    Caller,
    database,
    dataset_for,
    job_for,
    optional_caller,
    project_for,
)
from digipath.server.models import JobKind, JobStatus

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def _render(
    request: Request,
    template: str,
    who: Caller | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    values = {
        "request": request,
        "user": who.user if who else None,
        "csrf_token": who.csrf_token if who else None,
        **context,
    }
    return TEMPLATES.TemplateResponse(
        request, template, values, status_code=status_code, headers={"Cache-Control": "no-store"}
    )


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _refused(request: Request, who: Caller, error: HTTPException) -> Response:
    return _render(
        request, "error.html", who, status_code=error.status_code, title="Not available",
        detail=str(error.detail),
    )  # fmt: skip


def _anonymous(request: Request, template: str, who: Caller | None, **context) -> Response:
    if who is not None and template == "login.html":
        return RedirectResponse("/", status_code=303)
    return _render(request, template, who, **context)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, who: Caller | None = Depends(optional_caller)):
    return _anonymous(request, "login.html", who)


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request, who: Caller | None = Depends(optional_caller)):
    return _anonymous(request, "register.html", who)


@router.get("/reset-password", response_class=HTMLResponse)
def reset_page(request: Request, who: Caller | None = Depends(optional_caller)):
    mail = bool(request.app.state.settings.smtp_host)
    return _anonymous(request, "reset.html", who, mail=mail)


@router.get("/logout", response_class=HTMLResponse)
def logout_page(request: Request, who: Caller | None = Depends(optional_caller)):
    if who is None:
        return RedirectResponse("/login", status_code=303)
    return _render(request, "logout.html", who)


@router.get("/", response_class=HTMLResponse)
def projects_page(request: Request, who: Caller | None = Depends(optional_caller)):
    if who is None:
        return _to_login(request)
    return _render(request, "projects.html", who)


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(
    project_id: int,
    request: Request,
    who: Caller | None = Depends(optional_caller),
    db: Session = Depends(database, scope="function"),
):
    if who is None:
        return _to_login(request)
    try:
        project = project_for(db, who.user, project_id)
    except HTTPException as error:
        return _refused(request, who, error)
    return _render(request, "project.html", who, project=project)


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request, who: Caller | None = Depends(optional_caller)):
    if who is None:
        return _to_login(request)
    return _render(request, "notifications.html", who)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: int,
    request: Request,
    who: Caller | None = Depends(optional_caller),
    db: Session = Depends(database, scope="function"),
):
    if who is None:
        return _to_login(request)
    try:
        job = job_for(db, who.user, job_id)
    except HTTPException as error:
        return _refused(request, who, error)
    return _render(request, "job.html", who, job=job)


def _openseadragon() -> bool:
    from digipath.server.app import openseadragon_folder

    return openseadragon_folder() is not None


@router.get("/jobs/{job_id}/viewer", response_class=HTMLResponse)
def job_viewer_page(
    job_id: int,
    request: Request,
    who: Caller | None = Depends(optional_caller),
    db: Session = Depends(database, scope="function"),
):
    if who is None:
        return _to_login(request)
    try:
        job = job_for(db, who.user, job_id)
    except HTTPException as error:
        return _refused(request, who, error)
    if job.kind not in (JobKind.wsi_apply, JobKind.nuclei):
        return _refused(request, who, HTTPException(404, f"job {job_id} is not a whole-slide job"))
    ready = job.status == JobStatus.SUCCESS
    return _render(
        request, "viewer.html", who, heading=f"Job {job.id}: slide and output map",
        slide_url=f"/api/v1/jobs/{job.id}/slide.dzi",
        overlay_url=f"/api/v1/jobs/{job.id}/overlay.dzi" if ready else None,
        job=job, back_url=f"/jobs/{job.id}", openseadragon=_openseadragon(),
    )  # fmt: skip


@router.get("/datasets/{dataset_id}/samples/{index}/viewer", response_class=HTMLResponse)
def sample_viewer_page(
    dataset_id: int,
    index: int,
    request: Request,
    who: Caller | None = Depends(optional_caller),
    db: Session = Depends(database, scope="function"),
):
    if who is None:
        return _to_login(request)
    try:
        dataset = dataset_for(db, who.user, dataset_id)
    except HTTPException as error:
        return _refused(request, who, error)
    if not 0 <= index < dataset.samples:
        return _refused(
            request, who, HTTPException(404, f"dataset {dataset_id} has no sample {index}")
        )
    return _render(
        request, "viewer.html", who, heading=f"Dataset {dataset.name}: sample {index}",
        slide_url=f"/api/v1/datasets/{dataset.id}/samples/{index}/slide.dzi",
        overlay_url=None, job=None, back_url=None, openseadragon=_openseadragon(),
    )  # fmt: skip


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, who: Caller | None = Depends(optional_caller)):
    if who is None:
        return _to_login(request)
    return _render(request, "account.html", who)
