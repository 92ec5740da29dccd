"""A batch of 1000 through the real gateway: how long the call takes, and every item delivered."""

import time
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Stack
from pulse.db.models import Notification
from tests.conftest import Tenant, wait_until


def test_a_batch_of_a_thousand_is_accepted_in_one_call_and_delivered(
    stack: Stack, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    run = uuid.uuid4().hex[:8]
    items = [
        {
            "channel": "email",
            "recipient": f"batch-{run}-{index}@example.com",
            "content": {"subject": "Batch", "body": f"Item {index}"},
            "metadata": {"index": index},
        }
        for index in range(1000)
    ]
    with stack.client(tenant.api_key) as client:
        started = time.perf_counter()
        response = client.post("/v1/notifications/batch", json={"notifications": items}, timeout=60)
        elapsed = time.perf_counter() - started

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [result["index"] for result in results] == list(range(1000))
    assert all(result["status"] == "queued" for result in results)
    print(f"\nbatch of 1000: accepted in {elapsed * 1000:.0f} ms")

    def delivered() -> bool:
        with session_factory() as session:
            count = session.scalar(
                select(func.count()).where(
                    Notification.tenant_id == tenant.id, Notification.status == "delivered"
                )
            )
        return count == 1000

    wait_until(delivered, timeout=180, what="the batch to be delivered")
    with stack.sandbox() as sandbox:
        arrived = sandbox.get("/api/messages", params={"recipient": f"batch-{run}-999@example.com"}).json()
    assert [message["body"].strip() for message in arrived["items"]] == ["Item 999"]
