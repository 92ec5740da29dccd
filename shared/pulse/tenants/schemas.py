"""The API key routes' request and response bodies."""

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pulse.inputs import DateTimeInput
from pulse.tenants.service import Scope


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scopes": ["send"], "name": "billing service", "expires_at": None}]},
    )

    scopes: list[Scope] = Field(
        min_length=1,
        max_length=len(Scope),
        description="What the key may do; only scopes the calling key holds itself can be granted.",
    )
    name: str | None = Field(None, max_length=100, description="What the key is for, to recognise it.")
    expires_at: DateTimeInput | None = Field(
        None,
        description="When the key stops working (ISO 8601, in the future; naive means UTC); null: never.",
    )

    @field_validator("expires_at")
    @classmethod
    def _naive_is_utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class ApiKeyOut(BaseModel):
    """An API key without its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="Revoke it with DELETE /v1/api-keys/{id}; the audit log names it.")
    prefix: str = Field(description="The key's first 10 characters, to recognise it.")
    name: str | None
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None = Field(description="When it stops working; null: never.")
    last_used_at: datetime | None = Field(
        description="When it last authenticated a request, to the minute (refreshed at most once a minute)."
    )
    revoked_at: datetime | None = Field(description="When it was revoked; null while it works.")


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, only its hash is stored.")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")
