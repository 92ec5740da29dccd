from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.audit.service import AuditSettings
from pulse.delivery.retry import RetrySettings
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.settings import BrokerSettings, DatabaseSettings


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_SCHEDULER_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    retries: RetrySettings = Field(
        default_factory=RetrySettings,
        description="The workers' retry plans (PULSE_RETRY_*): attempts lost with their worker count too.",
    )
    tick_seconds: float = Field(0.5, description="Pause between two rounds of the scheduler's jobs.")
    batch_size: int = Field(500, description="Rows one job handles per transaction.")
    digest_batch_size: int = Field(
        50,
        ge=1,
        description="Digests closed per round: each loads and renders up to 1 MiB of collected sends.",
    )
    retry_overdue_seconds: float = Field(
        60.0, description="A retry this late is published again (its delayed message was lost)."
    )
    stuck_queued_seconds: float = Field(
        300.0,
        description="A `queued` notification untouched this long, with no publish owed, is published "
        "again (its message was unroutable or lost).",
    )
    stuck_queued_every_seconds: float = Field(
        30.0,
        description="How often stuck `queued` notifications are looked for (at most batch_size each time).",
    )
    dead_letter_reconcile_seconds: float = Field(
        10.0, description="How often dead-letter queues are checked against PostgreSQL (after replays)."
    )
    dead_letter_reconcile_batch_size: int = Field(
        1000,
        ge=1,
        description="Messages one reconciliation looks at per dead-letter queue (the rest on later passes).",
    )
    retention_days: float = Field(30, description="Finished notifications older than this are deleted.")
    retention_every_seconds: float = Field(60, description="How often the retention job runs.")
    audit: AuditSettings = Field(
        default_factory=AuditSettings, description="The audit log's retention (PULSE_AUDIT_RETENTION_DAYS)."
    )
    acceptance: AcceptanceSettings = Field(
        default_factory=AcceptanceSettings,
        description="The gateway's acceptance rules (`PULSE_ENABLED_CHANNELS`, `PULSE_QUIET_HOURS`, "
        "`PULSE_WEBHOOK_ALLOWLIST`, `PULSE_RATE_LIMIT`...), which every schedule run obeys.",
    )
    pause_after_failures: int = Field(
        5, ge=1, description="A schedule whose runs fail this many times in a row is paused."
    )
    fanout_chunk_size: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Subscribers of a topic send whose notifications are created per transaction.",
    )
    fanout_runners: int = Field(
        4,
        ge=1,
        le=16,
        description="Processes creating topic sends' notifications side by side (the parts of one "
        "fan-out, or several fan-outs), ~100 MiB each. Each spends about 40 % of a chunk waiting for "
        "PostgreSQL: two per core the scheduler may use.",
    )
    fanout_publish_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="A fan-out's notifications are published right after their chunk commits; the "
        "outbox sweep publishes those still unpublished after this long (a crashed scheduler's, or a "
        "busy publisher's backlog: each row is published by one of the two).",
    )
    queue_metrics_seconds: float = Field(
        5.0, description="How often queue depths are read from RabbitMQ for pulse_queue_length."
    )
    metrics_host: str = Field("0.0.0.0", description="Interface of the /metrics endpoint.")
    metrics_port: int = Field(9105, description="Port of the /metrics endpoint.")
