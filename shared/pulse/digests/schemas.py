"""What a digested send answers."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from pulse.vocabulary import Channel


class DigestedSend(BaseModel):
    """A send collected into a digest (202): it is sent as part of the digest's combined notification."""

    status: Literal["digested"] = "digested"
    digest_id: uuid.UUID = Field(
        description="The combined notification's id (GET /v1/notifications/{digest_id}): `scheduled` with "
        "`deferred_reason` `digest` while the window is open, then sent like any notification."
    )
    key: str
    user_id: str
    channel: Channel
    event_count: int = Field(description="Sends collected in the digest so far, this one included.")
    closes_at: datetime = Field(
        description="When the window closes (or closed: at once when this send filled it); the combined "
        "notification goes out then, or when the recipient's quiet hours end."
    )
