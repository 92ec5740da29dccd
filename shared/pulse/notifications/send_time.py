"""When a notification goes out: now, at `send_at`, or when the recipient's quiet hours end."""

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from pulse.notifications.schemas import NotificationRequest
from pulse.timing.clock import to_instant
from pulse.timing.policy import TenantPolicy
from pulse.vocabulary import Priority

QUIET_HOURS = "quiet_hours"
# A digest's combined notification while its window collects sends: the digest job sends it, not release.
DIGEST = "digest"


@dataclass(frozen=True)
class SendTiming:
    scheduled_for: datetime | None  # None: send now.
    timezone: str
    deferred_reason: str | None = None


def plan_send_time(
    request: NotificationRequest, *, priority: Priority, policy: TenantPolicy, now: datetime
) -> SendTiming:
    """`send_at` (naive: read in the recipient's zone; past: now), then pushed past quiet hours unless
    the notification is critical or opted out. The zone is the request's, else the policy's."""
    zone_name = request.timezone or policy.timezone
    zone = ZoneInfo(zone_name)
    wanted = now
    if request.send_at is not None:
        send_at = request.send_at if request.send_at.tzinfo else to_instant(request.send_at, zone)
        wanted = max(send_at, now)
    deferred_reason = None
    quiet = policy.quiet_hours
    if quiet is not None and request.respect_quiet_hours and priority is not Priority.CRITICAL:
        allowed = quiet.next_allowed_send_time(wanted, zone)
        if allowed > wanted:
            wanted, deferred_reason = allowed, QUIET_HOURS
    return SendTiming(
        scheduled_for=wanted if wanted > now else None, timezone=zone_name, deferred_reason=deferred_reason
    )
