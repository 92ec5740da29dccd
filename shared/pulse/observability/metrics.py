"""Prometheus metrics named in CONTRACT.md; each process exports the ones it updates."""

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

# The `*_created` timestamp series double the output and no dashboard of ours reads them.
disable_created_metrics()

# Delivery takes from milliseconds (sandbox) to minutes (retries): buckets cover both ends.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

NOTIFICATIONS_ACCEPTED = Counter(
    "pulse_notifications_accepted", "Notifications accepted by the gateway.", ["channel", "priority"]
)
NOTIFICATIONS_DELIVERED = Counter(
    "pulse_notifications_delivered", "Notifications delivered to a provider.", ["channel", "provider"]
)
NOTIFICATIONS_FAILED = Counter(
    "pulse_notifications_failed", "Notifications that ended failed.", ["channel", "reason"]
)
DELIVERY_ATTEMPTS = Counter(
    "pulse_delivery_attempts", "Delivery attempts by outcome.", ["channel", "outcome"]
)
DELIVERY_LATENCY = Histogram(
    "pulse_delivery_latency_seconds",
    "From acceptance to delivery.",
    ["channel", "priority"],
    buckets=_LATENCY_BUCKETS,
)
DELIVERIES_SKIPPED = Counter(
    "pulse_deliveries_skipped",
    "Messages dropped because their notification was finished or claimed elsewhere (duplicates).",
    ["channel"],
)
PROVIDER_REQUEST = Histogram(
    "pulse_provider_request_seconds", "Duration of one provider call.", ["channel", "provider"]
)
HTTP_REQUEST_DURATION = Histogram(
    "pulse_http_request_duration_seconds", "Gateway request duration.", ["route", "method", "status"]
)
CIRCUIT_STATE = Gauge(
    "pulse_circuit_state",
    "A provider's circuit breaker: 0 closed, 1 open, 2 half-open (webhooks: the worst receiver's).",
    ["provider"],
)
CIRCUITS_OPEN = Gauge(
    "pulse_circuits_open",
    "Open circuit breakers of a provider (webhooks: per tenant and receiver host).",
    ["provider"],
)
PROVIDER_TOKENS = Gauge(
    "pulse_provider_send_tokens",
    "Tokens left in a provider's send-rate bucket after this worker's last booking (below zero: sends "
    "booked ahead).",
    ["provider"],
)
PROVIDER_RATE_WAIT = Histogram(
    "pulse_provider_rate_wait_seconds",
    "How long a send waited for its provider's send-rate token.",
    ["provider"],
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_RATE_LIMITED = Counter(
    "pulse_provider_rate_limited",
    "Sends put back (no attempt used) because their provider's send-rate bucket had no token in time.",
    ["provider"],
)
PROVIDER_THROTTLED = Counter(
    "pulse_provider_throttled",
    "Sends a provider refused as too many (HTTP 429, SMTP 421); they go back without using an attempt.",
    ["provider"],
)
QUEUE_LENGTH = Gauge("pulse_queue_length", "Messages waiting in a Pulse queue.", ["queue"])
DEAD_LETTERS = Gauge("pulse_dead_letters", "Messages in a channel's dead-letter queue.", ["channel"])
OUTBOX_LAG = Gauge("pulse_outbox_lag_seconds", "Age of the oldest publish still owed to the broker.")
PUBLISHES_WAITING = Gauge(
    "pulse_publishes_waiting", "Committed notifications waiting for the gateway's after-commit publisher."
)
OUTBOX_PUBLISHED = Counter("pulse_outbox_published", "Publishes made by the outbox sweep.")
CLAIMS_RECOVERED = Counter(
    "pulse_claims_recovered", "Notifications re-queued after their worker's claim expired."
)
QUEUED_REQUEUED = Counter(
    "pulse_queued_requeued",
    "Queued notifications published again because their message never reached a worker.",
)
SCHEDULED_RELEASED = Counter("pulse_scheduled_released", "Scheduled notifications released when due.")
RETRIES_RECOVERED = Counter(
    "pulse_retries_recovered", "Retries published again because their delayed message was overdue."
)

REALTIME_EVENTS = Counter(
    "pulse_realtime_events",
    "In-app events published to the realtime processes, by type and outcome (published, failed).",
    ["type", "outcome"],
)


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose this process's metrics on http://host:port/metrics (a background thread)."""
    start_http_server(port, addr=host)


REALTIME_CONNECTIONS = Gauge("pulse_realtime_connections", "WebSocket connections open on this process.")
REALTIME_MESSAGES_SENT = Counter(
    "pulse_realtime_messages_sent", "Messages sent to WebSocket clients, by type.", ["type"]
)
REALTIME_REFUSED = Counter(
    "pulse_realtime_refused",
    "WebSocket connections refused, by reason (invalid_token, too_many_connections, unavailable).",
    ["reason"],
)
REALTIME_CLOSED = Counter(
    "pulse_realtime_closed",
    "WebSocket connections the server closed, by reason (too_big, malformed, idle, slow_consumer, expired,"
    " token_expired).",
    ["reason"],
)
