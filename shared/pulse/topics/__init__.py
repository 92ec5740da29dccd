"""Topics: per-tenant subscriptions of end users, and sends to every subscriber (fan-outs)."""
