import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.inputs import MAX_TOPIC_KEY, TOPIC_KEY_PATTERN
from pulse.topics.schemas import (
    FanoutOut,
    SubscriberOut,
    SubscriberPage,
    SubscribersAdded,
    SubscribersIn,
    SubscribersRemoved,
    TopicOut,
)
from pulse.topics.service import (
    cancel_fanout,
    count_subscribers,
    get_fanout,
    get_topic_size,
    list_subscribers,
    subscribe,
    unsubscribe,
)
from services.api.bodies import StrictJsonRoute
from services.api.deps import GatewayDep, ReaderDep, SenderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/topics", tags=["topics"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)
fanouts_router = APIRouter(
    prefix="/v1/fanouts", tags=["topics"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

NO_SUBSCRIBERS: dict[int | str, dict[str, str]] = {
    404: {"description": "The topic has no subscribers (a topic exists while it has some)"}
}
NO_FANOUT: dict[int | str, dict[str, str]] = {404: {"description": "No such fan-out for this tenant"}}

TopicKeyPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_TOPIC_KEY,
        pattern=TOPIC_KEY_PATTERN,
        description="The topic's key: letters, digits, `.`, `_`, `:`, `-` (starting with a letter or "
        "digit), at most 128 characters.",
    ),
]


@router.put("/{key}/subscribers", response_model=SubscribersAdded)
def add_subscribers(
    key: TopicKeyPath, body: SubscribersIn, principal: SenderDep, gateway: GatewayDep
) -> SubscribersAdded:
    """Subscribe up to 1000 users to the topic (creating it); users already subscribed stay so."""
    with transaction(gateway.session_factory) as session:
        added = subscribe(session, tenant_id=principal.tenant_id, topic=key, user_ids=body.user_ids)
        total = count_subscribers(session, tenant_id=principal.tenant_id, topic=key)
        record_change(
            session, principal, "topic.subscribe", "topic", key, after={"added": added, "subscribers": total}
        )
    return SubscribersAdded(key=key, subscribers=total, added=added)


@router.delete("/{key}/subscribers", response_model=SubscribersRemoved)
def remove_subscribers(
    key: TopicKeyPath, body: SubscribersIn, principal: SenderDep, gateway: GatewayDep
) -> SubscribersRemoved:
    """Unsubscribe up to 1000 users; users not subscribed are ignored. A topic whose last subscriber
    leaves no longer exists. A running fan-out still reaches users it has not come to yet only while
    they are subscribed."""
    with transaction(gateway.session_factory) as session:
        removed = unsubscribe(session, tenant_id=principal.tenant_id, topic=key, user_ids=body.user_ids)
        total = count_subscribers(session, tenant_id=principal.tenant_id, topic=key)
        record_change(
            session,
            principal,
            "topic.unsubscribe",
            "topic",
            key,
            after={"removed": removed, "subscribers": total},
        )
    return SubscribersRemoved(key=key, subscribers=total, removed=removed)


@router.get("/{key}", response_model=TopicOut, responses=NO_SUBSCRIBERS)
def read_topic(key: TopicKeyPath, principal: ReaderDep, session: SessionDep) -> TopicOut:
    """The topic and how many users are subscribed."""
    return TopicOut(key=key, subscribers=get_topic_size(session, tenant_id=principal.tenant_id, topic=key))


@router.get("/{key}/subscribers", response_model=SubscriberPage, responses=NO_SUBSCRIBERS)
def browse_subscribers(
    key: TopicKeyPath,
    principal: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> SubscriberPage:
    """The topic's subscribers in user id order; follow `next_cursor` for the next page."""
    rows, next_cursor = list_subscribers(
        session, tenant_id=principal.tenant_id, topic=key, limit=limit, cursor=cursor
    )
    return SubscriberPage(items=[SubscriberOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@fanouts_router.get("/{fanout_id}", response_model=FanoutOut, responses=NO_FANOUT)
def read_fanout(fanout_id: uuid.UUID, principal: ReaderDep, session: SessionDep) -> FanoutOut:
    """A topic send's progress: notifications created and subscribers skipped so far, by reason."""
    return FanoutOut.model_validate(get_fanout(session, tenant_id=principal.tenant_id, id=fanout_id))


@fanouts_router.post(
    "/{fanout_id}/cancel",
    response_model=FanoutOut,
    responses={**NO_FANOUT, 409: {"description": "The fan-out is done"}},
)
def stop_fanout(fanout_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> FanoutOut:
    """Stop a running fan-out: no further subscriber gets a notification. The notifications already
    created stay and are delivered (cancel them one by one if need be)."""
    with transaction(gateway.session_factory) as session:
        record_change(session, principal, "fanout.cancel", "fanout", fanout_id)
        return FanoutOut.model_validate(cancel_fanout(session, tenant_id=principal.tenant_id, id=fanout_id))
