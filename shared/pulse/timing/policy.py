"""A tenant's timing policy: the time zone and quiet hours its recipients' sends are planned in, and
the priority they get when neither the send nor its template names one."""

from dataclasses import dataclass

from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Priority


@dataclass(frozen=True)
class TenantPolicy:
    """A tenant's defaults for its recipients (a recipient profile may override the first two)."""

    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    default_priority: Priority = Priority.NORMAL

    @classmethod
    def of(
        cls,
        timezone: str,
        quiet_hours: str | None,
        *,
        default: QuietHours | None,
        default_priority: str | None = None,
    ) -> "TenantPolicy":
        """From a tenant's stored settings; no quiet hours of its own means the deployment's `default`."""
        return cls(
            timezone=timezone,
            quiet_hours=QuietHours.parse(quiet_hours) if quiet_hours else default,
            default_priority=Priority(default_priority or Priority.NORMAL),
        )


NO_QUIET_HOURS_UTC = TenantPolicy()
