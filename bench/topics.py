"""make bench, topic scenario: one send to a topic of N subscribers (each with an email profile).

Measured: how long the subscriptions take through the API (calls of 1000), how long until the
scheduler has created every subscriber's notification (from the send's 202 to the fan-out's `done`),
the delivery rate (first notification created → last delivered), the CPU per process, and the
scheduler's resident memory before the send and at its peak.
"""

import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import insert, text

from bench import procstats
from bench.ledger import Ledger
from bench.report import Scenario
from devtools.stack import Stack, wait_until
from pulse.db.models import Recipient

SUBSCRIBE_CALL = 1000  # user ids per PUT /v1/topics/{key}/subscribers (the API's bound)


def topic_fanout(
    stack: Stack,
    ledger: Ledger,
    groups: dict[str, procstats.Selector],
    *,
    subscribers: int,
    cpu_report: Callable[[procstats.CpuTracker, int], Any],
    progress: Callable[[str], None],
) -> Scenario:
    tenant = ledger.tenant("topic")
    users = [f"user-{index:07}" for index in range(subscribers)]
    with ledger.engine.begin() as connection:  # Profiles: set-up, not measured.
        for start in range(0, subscribers, 10_000):
            rows = [
                {"tenant_id": tenant.id, "user_id": user, "email": f"{user}@example.com"}
                for user in users[start : start + 10_000]
            ]
            connection.execute(insert(Recipient), rows)
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {tenant.api_key}"}) as api:
        started = time.perf_counter()
        for start in range(0, subscribers, SUBSCRIBE_CALL):
            body = {"user_ids": users[start : start + SUBSCRIBE_CALL]}
            api.put("/v1/topics/bench/subscribers", json=body, timeout=60).raise_for_status()
        subscribe_seconds = time.perf_counter() - started
        progress(f"topic: {subscribers} subscribed in {subscribe_seconds:.1f} s")
        scheduler = groups["scheduler"]
        rss_before = _scheduler_mib(scheduler, procstats.rss_mib)
        with procstats.CpuTracker(groups) as cpu:
            started = time.perf_counter()
            sent = api.post(
                "/v1/notifications",
                json={
                    "channel": "email",
                    "topic": "bench",
                    "content": {"subject": "Bench", "body": "Hello."},
                },
            )
            accepted_ms = (time.perf_counter() - started) * 1000
            sent.raise_for_status()
            fanout_id = sent.json()["fanout_id"]
            fanout = wait_until(
                lambda: _done(api, fanout_id), timeout=600, interval=0.1, what="the fan-out to finish"
            )
            created_seconds = time.perf_counter() - started
            progress(f"topic: {fanout['created']} notifications created in {created_seconds:.1f} s")
            ledger.wait_finished(tenant, timeout=120 + subscribers / 20)
    outcome = ledger.outcome(tenant)
    with ledger.engine.connect() as connection:
        span = connection.execute(
            text(
                "SELECT extract(epoch FROM max(created_at) - min(created_at))"
                " FROM notifications WHERE tenant_id = :t"
            ),
            {"t": tenant.id},
        ).scalar_one()
    scenario = Scenario.of("topic", outcome, sent=subscribers, clients=1, send_seconds=created_seconds)
    scenario.cpu = cpu_report(cpu, outcome.delivered)
    scenario.details = {
        "subscribe_seconds": round(subscribe_seconds, 1),
        "send_answered_ms": round(accepted_ms, 1),
        "created_seconds": round(created_seconds, 1),
        "creation_span_seconds": round(float(span), 1),
        "created": fanout["created"],
        "skipped": fanout["skipped"],
        "scheduler_rss_before_mib": rss_before,
        "scheduler_peak_rss_mib": _scheduler_mib(scheduler, procstats.peak_rss_mib),
    }
    progress(scenario.line())
    return scenario


def _done(api: httpx.Client, fanout_id: str) -> dict[str, Any] | None:
    fanout: dict[str, Any] = api.get(f"/v1/fanouts/{fanout_id}").json()
    return fanout if fanout["status"] == "done" else None


def _scheduler_mib(select: procstats.Selector, measure: Callable[[int], float | None]) -> float:
    return round(sum(measure(stat.pid) or 0.0 for stat in select(procstats.process_table())), 1)
