"""The deployment's rules for accepting a send, the same on every way in: POST /v1/notifications and
its batch, and recurring schedules (screened when created, and again at each run with the rate limit).

The gateway and the scheduler both read these settings (`PULSE_*`), so a schedule cannot do what a
direct send may not.
"""

from typing import Annotated, Protocol

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pulse.errors import InvalidInput
from pulse.notifications.schemas import NotificationRequest
from pulse.rate_limits.service import MAX_WINDOW_SECONDS, QUOTA_WINDOW_SECONDS, RateLimit, SendLimits
from pulse.settings import split_commas
from pulse.timing.policy import TenantPolicy
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Channel
from pulse.webhooks.ssrf import Allowlist, RefusedUrl, check_literal


class TenantSettings(Protocol):
    """What a tenant may set for its sends (a Tenant row, or the Principal of one of its keys)."""

    @property
    def timezone(self) -> str: ...
    @property
    def quiet_hours(self) -> str | None: ...
    @property
    def default_priority(self) -> str | None: ...
    @property
    def rate_limit(self) -> int | None: ...
    @property
    def rate_limit_window_seconds(self) -> int | None: ...
    @property
    def sends_per_minute(self) -> int | None: ...


class AcceptanceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_", env_file=".env", extra="ignore")

    enabled_channels: Annotated[list[Channel], NoDecode] = Field(
        default=list(Channel),
        description="Channels this deployment delivers (comma-separated); others are refused with 422.",
    )
    quiet_hours: str = Field(
        "22:00-08:00",
        description="Quiet hours in recipients' local time (`HH:MM-HH:MM` or `off`); tenants may override.",
    )
    webhook_allowlist: str = Field(
        "",
        description="Hosts, addresses or CIDRs exempt from the webhook SSRF guard (comma-separated; "
        "`host:port` exempts one port only).",
    )
    rate_limit: int = Field(
        10,
        ge=0,
        description="Sends per (tenant, user id, channel) and per (tenant, address, channel) per window "
        "(0: no limit); tenants may override.",
    )
    rate_limit_window_seconds: int = Field(
        60, ge=1, le=MAX_WINDOW_SECONDS, description="The rate limit's window."
    )
    tenant_sends_per_minute: int = Field(
        60_000,
        ge=0,
        description="A tenant's quota: its sends per minute, every channel together (0: no quota), "
        "so that one tenant cannot fill the shared queues; tenants may have their own.",
    )

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet_hours(cls, value: str) -> str:
        QuietHours.parse(value)
        return value

    @field_validator("enabled_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        return split_commas(value)

    @property
    def default_quiet_hours(self) -> QuietHours | None:
        return QuietHours.parse(self.quiet_hours)

    def rate_for(
        self, *, limit: int | None, window_seconds: int | None, sends_per_minute: int | None
    ) -> SendLimits:
        """A tenant's rate limit and quota: its own where it has them, else the deployment's."""
        return SendLimits(
            per_recipient=RateLimit(
                limit=self.rate_limit if limit is None else limit,
                window_seconds=window_seconds or self.rate_limit_window_seconds,
            ),
            per_tenant=RateLimit(
                limit=self.tenant_sends_per_minute if sends_per_minute is None else sends_per_minute,
                window_seconds=QUOTA_WINDOW_SECONDS,
            ),
        )

    def policy_of(self, tenant: TenantSettings) -> TenantPolicy:
        """The tenant's time zone, quiet hours (its own, else the deployment's) and default priority."""
        return TenantPolicy.of(
            tenant.timezone,
            tenant.quiet_hours,
            default=self.default_quiet_hours,
            default_priority=tenant.default_priority,
        )

    def limits_of(self, tenant: TenantSettings) -> SendLimits:
        """The tenant's rate limit and quota, else the deployment's."""
        return self.rate_for(
            limit=tenant.rate_limit,
            window_seconds=tenant.rate_limit_window_seconds,
            sends_per_minute=tenant.sends_per_minute,
        )


def screen(
    request: NotificationRequest, rules: AcceptanceSettings, *, at: tuple[str, ...] = ("body",)
) -> None:
    """The checks that need no database: the channel is enabled, URLs pass the SSRF guard. Raises
    InvalidInput located at `at` + the field (a schedule's notification is at body.notification)."""
    if request.channel not in rules.enabled_channels:
        enabled = ", ".join(rules.enabled_channels)
        raise InvalidInput(
            f"channel '{request.channel}' is not enabled on this deployment (enabled: {enabled})",
            location=(*at, "channel"),
        )
    if request.escalate and (disabled := set(request.escalate.channels) - set(rules.enabled_channels)):
        raise InvalidInput(
            f"cannot escalate to {', '.join(sorted(disabled))}: not enabled on this deployment",
            location=(*at, "escalate", "channels"),
        )
    urls = {
        "recipient": request.recipient if request.channel is Channel.WEBHOOK else None,
        "callback_url": request.callback_url,
    }
    for field, url in urls.items():
        if url is None:
            continue
        try:
            check_literal(url, Allowlist.parse(rules.webhook_allowlist))
        except RefusedUrl as error:
            raise InvalidInput(f"refused by the SSRF guard: {error}", location=(*at, field)) from error
