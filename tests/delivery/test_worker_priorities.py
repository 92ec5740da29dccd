"""A channel worker consumes the queues of the priorities it is given, so urgent sends can have capacity
of their own."""

import pytest

from pulse.vocabulary import Priority
from services.email_worker.settings import EmailWorkerSettings
from services.email_worker.worker import create_worker


def test_a_worker_consumes_every_priority_by_default() -> None:
    settings = EmailWorkerSettings()

    app = create_worker(settings)

    assert [queue.name for queue in app.conf.task_queues] == [f"pulse.email.{p}" for p in Priority]
    assert settings.node_name("email") == "email@%h"


def test_a_worker_for_the_urgent_priorities_consumes_only_their_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_EMAIL_WORKER_PRIORITIES", "critical, high")
    settings = EmailWorkerSettings()

    app = create_worker(settings)

    assert [queue.name for queue in app.conf.task_queues] == ["pulse.email.critical", "pulse.email.high"]
    assert settings.node_name("email") == "email-critical-high@%h"
