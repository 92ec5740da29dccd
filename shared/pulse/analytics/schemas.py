"""The analytics API's response bodies. Every instant is UTC (`...Z`)."""

from datetime import datetime

from pydantic import BaseModel, Field


class FailureReason(BaseModel):
    reason: str = Field(description="The notification's last error (`unknown` when none was recorded).")
    count: int = Field(description="Failed notifications with this last error.")


class ChannelSummary(BaseModel):
    """What happened to one channel's notifications created in the window."""

    total: int = Field(description="Notifications created in [since, until).")
    by_status: dict[str, int] = Field(
        description="Their current statuses; only statuses that occur are listed.",
        examples=[{"delivered": 120, "failed": 3, "queued": 2}],
    )
    delivery_rate: float | None = Field(
        description="delivered / (delivered + failed), counting `read` (in-app) as delivered; "
        "null while none of them is delivered or failed."
    )
    avg_delivery_seconds: float | None = Field(
        description="Mean time from creation (acceptance) to delivery over the delivered ones; it includes "
        "any wait for `send_at` or quiet hours."
    )
    p95_delivery_seconds: float | None = Field(
        description="95th percentile of the same durations (continuous, linearly interpolated)."
    )
    avg_attempts: float | None = Field(
        description="Mean delivery attempts over the delivered and failed ones."
    )
    retried: int = Field(description="Notifications that needed more than one attempt.")
    read: int = Field(0, description="In-app: notifications their user has read (0 on other channels).")
    read_rate: float | None = Field(
        None,
        description="In-app: read / delivered (`read` counting as delivered); null on other channels and "
        "while none is delivered.",
    )
    top_failure_reasons: list[FailureReason] = Field(
        description="The failed ones grouped by last error, most frequent first (at most 5)."
    )


class ThroughputMinute(BaseModel):
    minute: datetime = Field(description="Start of the minute (UTC).")
    accepted: int = Field(description="Notifications created in this minute.")
    delivered: int = Field(description="Notifications delivered in this minute.")
    failed: int = Field(description="Notifications that failed for good in this minute.")


class AnalyticsSummary(BaseModel):
    since: datetime = Field(description="Start of the window (inclusive, UTC).")
    until: datetime = Field(description="End of the window (exclusive, UTC).")
    channels: dict[str, ChannelSummary] = Field(
        description="Per channel, over the notifications created in the window; only channels with any."
    )
    throughput: list[ThroughputMinute] = Field(
        description="The 60 minutes before `until`, oldest first, every minute present (zeros included); "
        "the last one is the minute `until` falls in. Independent of `since`."
    )
    queues: dict[str, int] | None = Field(
        description="Messages ready in each `pulse.*` queue. Deployment-wide: the queues are shared by all "
        "tenants, so these are not per tenant. Null when the broker cannot be reached.",
        examples=[{"pulse.email.normal": 4, "pulse.email.dead": 1}],
    )
