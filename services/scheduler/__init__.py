"""The scheduler service: everything that happens later or every so often, as jobs of one loop
(services/scheduler/loop.py, `Scheduler.jobs`) plus the topic fan-out runners in processes of their own
(services/scheduler/fanouts.py).

- Sending later: releasing due scheduled notifications, running due schedules, closing due digests,
  escalating unread in-app notifications.
- Keeping delivery going: the outbox sweep, and the safety nets of pulse.delivery.recovery (expired
  claims, overdue retries, notifications stuck in `queued`) and of the dead-letter queues.
- Retention: expired notifications, old audit log entries, stale rate-limit counters, idle provider
  send-rate buckets.
- Metrics: the outbox lag and the queues' depths.
"""
