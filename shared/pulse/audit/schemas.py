"""The audit log API's response bodies."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6f3c52-8f0e-4d2a-9a43-5d0e1f2a3b4c",
                    "created_at": "2026-11-30T09:15:02.123456Z",
                    "actor": "5d1c0f7e-2b8a-4c61-9f3e-7a2b1c0d9e8f",
                    "action": "template.update",
                    "object_type": "template",
                    "object_id": "welcome",
                    "request_id": "3f2b9c7d0e1a4b5c8d9e0f1a2b3c4d5e",
                    "changes": {
                        "before": {"subject": "Hi", "version": 1},
                        "after": {"subject": "Hello", "version": 2},
                    },
                }
            ]
        },
    )

    id: uuid.UUID
    created_at: datetime = Field(description="When the change was committed (the database's clock).")
    actor: str = Field(
        description="The id of the API key that made it (GET /v1/api-keys), or `cli` for pulse-admin."
    )
    action: str = Field(description="`<object type>.<verb>`, e.g. `template.create`, `api_key.revoke`.")
    object_type: str = Field(
        description="`template`, `schedule`, `recipient`, `api_key`, `webhook_secret`, `notification`, "
        "`dead_letters`, `tenant`, `topic`, `fanout`."
    )
    object_id: str = Field(description="The template's name, the user id, or the object's id.")
    request_id: str | None = Field(description="The request's X-Request-ID (none for pulse-admin).")
    changes: dict[str, Any] | None = Field(
        description="`before` and `after` with the fields that changed (all on a creation or deletion); "
        "secrets are never shown (`[redacted]`), long values are cut."
    )


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")
