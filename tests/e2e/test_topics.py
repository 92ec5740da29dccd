"""A topic send through the real services: the scheduler fans it out, the email worker delivers."""

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Stack
from pulse.db.models import Notification
from tests.conftest import Tenant, wait_until


def test_a_topic_send_reaches_every_subscriber_who_can_be_reached(
    stack: Stack, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-{index}" for index in range(30)]
    with stack.client(tenant.api_key) as client:
        for user in users:
            profile: dict[str, Any] = {"email": f"topic-{user}@example.com"}
            if user == users[0]:
                profile["preferences"] = {"email": False}
            assert client.put(f"/v1/recipients/{user}", json=profile).status_code == 201
        subscribed = client.put(
            f"/v1/topics/news-{run}/subscribers", json={"user_ids": [*users, "no-profile"]}
        )
        assert subscribed.json()["subscribers"] == 31

        sent = client.post(
            "/v1/notifications",
            json={
                "channel": "email",
                "topic": f"news-{run}",
                "content": {"subject": "News", "body": "Big news"},
            },
        )
        assert sent.status_code == 202, sent.text
        fanout_id = sent.json()["fanout_id"]

        def done() -> dict[str, Any] | None:
            fanout: dict[str, Any] = client.get(f"/v1/fanouts/{fanout_id}").json()
            return fanout if fanout["status"] == "done" else None

        fanout = wait_until(done, timeout=60, what="the fan-out to finish")
    assert (fanout["created"], fanout["skipped"]) == (29, 2)
    assert fanout["skipped_reasons"] == {"opted_out": 1, "no_address": 1}

    def delivered() -> bool:
        with session_factory() as session:
            count = session.scalar(
                select(func.count()).where(
                    Notification.fanout_id == uuid.UUID(fanout_id), Notification.status == "delivered"
                )
            )
        return count == 29

    wait_until(delivered, timeout=120, what="every subscriber's notification to be delivered")
    with stack.sandbox() as sandbox:
        arrived = sandbox.get("/api/messages", params={"recipient": f"topic-{users[-1]}@example.com"}).json()
        refused = sandbox.get("/api/messages", params={"recipient": f"topic-{users[0]}@example.com"}).json()
    assert [message["body"].strip() for message in arrived["items"]] == ["Big news"]
    assert refused["items"] == []
