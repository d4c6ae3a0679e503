"""Projects and their members (owner / viewer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digipath.server.api.schemas import Body, Name
from digipath.server.deps import Caller, caller, database, project_for
from digipath.server.models import Project, ProjectMember, Role, Task, User

__all__ = ["delete_orphaned_projects", "router"]

router = APIRouter(tags=["projects"])


class Member(Body):
    username: str
    role: Role = Role.viewer


class ProjectCreate(Body):
    name: Name
    task: Task
    description: str = ""
    members: list[Member] = Field(default_factory=list)


class ProjectUpdate(Body):
    name: Name | None = None
    description: str | None = None
    members: list[Member] | None = None


def project_document(db: Session, project: Project, user: User) -> dict:
    """A project as the API returns it (with the caller's role)."""
    members = [
        {"username": m.user.username, "user_id": m.user_id, "role": m.role.value}
        for m in sorted(project.members, key=lambda m: (m.role != Role.owner, m.user.username))
    ]
    role = next((m["role"] for m in members if m["user_id"] == user.id), None)
    return {
        "id": project.id, "name": project.name, "task": project.task.value,
        "description": project.description, "created": project.created.isoformat(),
        "members": members, "role": role,
    }  # fmt: skip


def _set_members(db: Session, project: Project, owner: User, members: list[Member]) -> None:
    wanted: dict[int, Role] = {owner.id: Role.owner}
    for member in members:
        user = db.scalar(select(User).where(User.username == member.username))
        if user is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"members: no user {member.username!r}"
            )
        if user.id != owner.id:
            wanted[user.id] = member.role
    if Role.owner not in wanted.values():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a project needs an owner")
    current = {m.user_id: m for m in project.members}
    for user_id, member in current.items():
        if user_id not in wanted:
            project.members.remove(member)
    for user_id, role in wanted.items():
        if user_id in current:
            current[user_id].role = role
        else:
            project.members.append(ProjectMember(user_id=user_id, role=role))
    db.flush()


@router.get("/projects")
def list_projects(
    who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> list[dict]:
    """The projects the caller is a member of."""
    projects = db.scalars(
        select(Project)
        .join(ProjectMember)
        .where(ProjectMember.user_id == who.user.id)
        .order_by(Project.created.desc())
    ).all()
    return [project_document(db, project, who.user) for project in projects]


@router.post("/projects", status_code=status.HTTP_201_CREATED)
def create_project(
    body: ProjectCreate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Create a project; the caller is its owner, ``members`` are added with their roles."""
    project = Project(name=body.name, task=body.task, description=body.description[:4000])
    db.add(project)
    db.flush()
    _set_members(db, project, who.user, body.members)
    return project_document(db, project, who.user)


@router.get("/projects/{project_id}")
def get_project(
    project_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """One project (members only)."""
    return project_document(db, project_for(db, who.user, project_id), who.user)


@router.patch("/projects/{project_id}")
def update_project(
    project_id: int,
    body: ProjectUpdate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Rename, describe or set the members (the list replaces the old one; owners only). The
    caller stays an owner."""
    project = project_for(db, who.user, project_id, owner=True)
    if body.name is not None:
        project.name = body.name
    if body.description is not None:
        project.description = body.description[:4000]
    if body.members is not None:
        _set_members(db, project, who.user, body.members)
    return project_document(db, project, who.user)


@router.delete("/projects/{project_id}")
def delete_project(
    project_id: int,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Delete a project and its jobs' records (owners only; running jobs are stopped first)."""
    project = project_for(db, who.user, project_id, owner=True)
    request.app.state.runner.stop_project(db, project.id)
    db.delete(project)
    return {"result": "deleted"}


def delete_orphaned_projects(db: Session, user: User) -> None:
    """Delete the projects ``user`` is the only owner of (their account is going)."""
    owned = db.scalars(
        select(ProjectMember.project_id).where(
            ProjectMember.user_id == user.id, ProjectMember.role == Role.owner
        )
    ).all()
    for project_id in owned:
        owners = db.scalar(
            select(func.count()).where(
                ProjectMember.project_id == project_id, ProjectMember.role == Role.owner
            )
        )
        if owners == 1:
            db.delete(db.get(Project, project_id))
    db.flush()
