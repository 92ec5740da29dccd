"""The scheduler service: everything that happens later or every so often (for now the outbox sweep
and the recovery of expired claims)."""
