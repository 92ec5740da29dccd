"""Storing and finding a tenant's templates. Callers own the transaction (commit at the edge)."""

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import Template
from pulse.errors import Conflict, InvalidInput, NotFound
from pulse.templates.compiling import check_template_source
from pulse.templates.schemas import TemplateContent, TemplateIn, TemplateReplacement
from pulse.vocabulary import Channel


def create_template(session: Session, *, tenant_id: uuid.UUID, request: TemplateIn) -> Template:
    """Store a new template (version 1); Conflict if the tenant already has one of that name."""
    check_template_source(request.subject, request.body, request.html)
    now = datetime.now(UTC)
    created = session.scalars(
        pg_insert(Template)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=request.name,
            created_at=now,
            updated_at=now,
            **_content(request),
        )
        .on_conflict_do_nothing(constraint="uq_templates_tenant_name")
        .returning(Template)
    ).one_or_none()
    if created is None:
        raise Conflict(f"template {request.name!r} already exists")
    return created


def get_template(session: Session, *, tenant_id: uuid.UUID, name: str) -> Template:
    template = session.scalars(
        select(Template).where(Template.tenant_id == tenant_id, Template.name == name)
    ).one_or_none()
    if template is None:
        raise NotFound(f"template {name!r} not found")
    return template


def list_templates(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    channel: Channel | None = None,
    active: bool | None = None,
    page: int = 1,
    size: int = 50,
) -> tuple[list[Template], int]:
    """Page `page` (from 1) of the matching templates, ordered by name, and how many match in all."""
    conditions = [Template.tenant_id == tenant_id]
    if channel is not None:
        conditions.append(Template.channel == channel)
    if active is not None:
        conditions.append(Template.active == active)
    total = session.scalar(select(func.count()).select_from(Template).where(*conditions)) or 0
    rows = session.scalars(
        select(Template).where(*conditions).order_by(Template.name).offset((page - 1) * size).limit(size)
    ).all()
    return list(rows), total


def replace_template(
    session: Session, *, tenant_id: uuid.UUID, name: str, request: TemplateReplacement
) -> Template:
    """Replace every field of an existing template but its name and bump its version; NotFound if there
    is none."""
    if request.name is not None and request.name != name:
        raise InvalidInput(
            f"the body names {request.name!r} but the path {name!r}: templates cannot be renamed",
            location=("body", "name"),
        )
    check_template_source(request.subject, request.body, request.html)
    replaced = session.scalars(
        update(Template)
        .where(Template.tenant_id == tenant_id, Template.name == name)
        .values(version=Template.version + 1, updated_at=datetime.now(UTC), **_content(request))
        .returning(Template),
        execution_options={"populate_existing": True},
    ).one_or_none()
    if replaced is None:
        raise NotFound(f"template {name!r} not found")
    return replaced


def delete_template(session: Session, *, tenant_id: uuid.UUID, name: str) -> Template:
    """Delete it; returns it as it was."""
    deleted = session.scalars(
        delete(Template).where(Template.tenant_id == tenant_id, Template.name == name).returning(Template)
    ).one_or_none()
    if deleted is None:
        raise NotFound(f"template {name!r} not found")
    return deleted


def find_templates(session: Session, tenant_id: uuid.UUID, names: Collection[str]) -> dict[str, Template]:
    """The tenant's templates of these names (active or not), by name, in one query; absent names are
    absent from the result."""
    if not names:
        return {}
    rows = session.scalars(
        select(Template).where(Template.tenant_id == tenant_id, Template.name.in_(set(names)))
    )
    return {template.name: template for template in rows}


def _content(request: TemplateContent) -> dict[str, Any]:
    return request.model_dump(mode="json", include=set(TemplateContent.model_fields))
