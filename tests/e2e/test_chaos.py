"""A small `make chaos` inside the suite: every part killed or restarted under load, nothing lost.

It restarts the machine's RabbitMQ and PostgreSQL when it may (root, Debian tools present), so it
runs last (see conftest.py); without them it still kills and restarts every Pulse process.
"""

import os
import shutil

import pytest

from bench.chaos import run

CAN_RESTART_INFRASTRUCTURE = (
    hasattr(os, "geteuid")
    and os.geteuid() == 0
    and bool(shutil.which("pg_ctlcluster") and shutil.which("rabbitmqctl"))
)


@pytest.mark.chaos
def test_nothing_is_lost_or_duplicated_while_every_part_is_killed_and_restarted() -> None:
    report = run(
        400,
        8,
        180,
        broker=CAN_RESTART_INFRASTRUCTURE,
        database=CAN_RESTART_INFRASTRUCTURE,
    )

    assert report["accepted"] == 400, report
    assert report["lost"] == 0, report
    assert report["duplicates"] == 0, report
    assert report["delivered"] + report["failed"] == report["accepted"], report
