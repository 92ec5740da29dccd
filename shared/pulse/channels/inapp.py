"""The inapp "provider": delivering an inapp notification is storing it in its user's inbox.

The inbox is the notification rows themselves (pulse.inapp.inbox), so there is nothing to send: the
attempt's record makes the row `delivered`, which puts it in the inbox. The push to the user's open
connections follows once that is committed (services/realtime/worker.py), so that no client is told
of a notification its inbox does not show yet.
"""

from typing import Any

from pulse.delivery.providers import Claim


class InboxProvider:
    name = "inbox"

    def send(self, claim: Claim) -> dict[str, Any] | None:
        return None
