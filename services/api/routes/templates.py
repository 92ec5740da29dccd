import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.pagination import MAX_PAGE
from pulse.templates.rendering import render_template
from pulse.templates.schemas import (
    PreviewOut,
    PreviewRequest,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplateReplacement,
)
from pulse.templates.service import (
    create_template,
    delete_template,
    find_templates,
    get_template,
    list_templates,
    replace_template,
)
from pulse.text import NO_NUL_CHARACTERS
from pulse.vocabulary import Channel
from services.api.bodies import StrictJsonRoute
from services.api.deps import AdminDep, GatewayDep, ReaderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such template for this tenant"}}

TemplateName = Annotated[str, Path(pattern=NO_NUL_CHARACTERS)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplateOut,
    responses={409: {"description": "The tenant already has a template of that name"}},
)
def add_template(request: TemplateIn, principal: AdminDep, gateway: GatewayDep) -> TemplateOut:
    """Store a template. `subject`, `body` and `html` are Jinja2 (sandboxed; `html` is autoescaped);
    a syntax error or a forbidden construct is refused with 422 naming the part and line. Filters
    beyond Jinja's own: `currency`, `format_number`, `format_date`, `format_datetime`."""
    with transaction(gateway.session_factory) as session:
        created = TemplateOut.model_validate(
            create_template(session, tenant_id=principal.tenant_id, request=request)
        )
        record_change(session, principal, "template.create", "template", request.name, after=created)
    return created


@router.get("", response_model=TemplatePage)
def browse_templates(
    principal: ReaderDep,
    session: SessionDep,
    channel: Channel | None = None,
    active: bool | None = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="From 1.")] = 1,
    size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TemplatePage:
    """This tenant's templates by name, a page at a time, with the total count."""
    rows, total = list_templates(
        session, tenant_id=principal.tenant_id, channel=channel, active=active, page=page, size=size
    )
    return TemplatePage(
        items=[TemplateOut.model_validate(row) for row in rows], total=total, page=page, size=size
    )


@router.get("/{name}", response_model=TemplateOut, responses=NOT_FOUND)
def read_template(name: TemplateName, principal: ReaderDep, session: SessionDep) -> TemplateOut:
    """One template, at its current version."""
    return TemplateOut.model_validate(get_template(session, tenant_id=principal.tenant_id, name=name))


@router.put("/{name}", response_model=TemplateOut, responses=NOT_FOUND)
def change_template(
    name: TemplateName, request: TemplateReplacement, principal: AdminDep, gateway: GatewayDep
) -> TemplateOut:
    """Replace the whole template (omitted optional fields are reset) and increment its `version`;
    sends accepted from then on use the new content. The path names the template: the body needs no
    `name`, and one that differs from the path's is refused with 422 naming `body.name` (templates
    cannot be renamed)."""
    with transaction(gateway.session_factory) as session:
        before = _snapshot(session, principal.tenant_id, name)
        replaced = TemplateOut.model_validate(
            replace_template(session, tenant_id=principal.tenant_id, name=name, request=request)
        )
        record_change(session, principal, "template.update", "template", name, before=before, after=replaced)
    return replaced


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def remove_template(name: TemplateName, principal: AdminDep, gateway: GatewayDep) -> Response:
    """Delete it; notifications already accepted from it keep their rendered content."""
    with transaction(gateway.session_factory) as session:
        deleted = delete_template(session, tenant_id=principal.tenant_id, name=name)
        record_change(
            session,
            principal,
            "template.delete",
            "template",
            name,
            before=TemplateOut.model_validate(deleted),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/preview", response_model=PreviewOut, responses=NOT_FOUND)
def preview_template(
    name: TemplateName, request: PreviewRequest, principal: ReaderDep, session: SessionDep
) -> PreviewOut:
    """Render it with `variables` (formatted for `locale`) without sending anything; inactive
    templates too. 422 names the missing variables, or says what failed in the template."""
    template = get_template(session, tenant_id=principal.tenant_id, name=name)
    rendered = render_template(template, request.variables, locale=request.locale)
    return PreviewOut(**rendered, version=template.version)


def _snapshot(session: Session, tenant_id: uuid.UUID, name: str) -> TemplateOut | None:
    """The template as it is, before a change (None if there is none: the change says NotFound)."""
    template = find_templates(session, tenant_id, [name]).get(name)
    return None if template is None else TemplateOut.model_validate(template)
