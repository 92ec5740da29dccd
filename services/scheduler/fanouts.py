"""The scheduler's fan-out runner: a thread of its own that creates the notifications of topic sends,
chunk after chunk, and hands each chunk to the after-commit publisher.

A thread rather than one more job of the loop: a job gets one transaction per tick (0.5 s), which
would hold a 100,000-subscriber fan-out to 1000 notifications per tick; the runner goes on at once
while fan-outs are running, and the other jobs keep their rhythm meanwhile.

Creating does not wait for publishing: the notifications are committed with their outbox rows, and
what the publisher does not take (it holds a bounded number, then leaves the rest to the outbox
sweep) is published by the sweep; memory stays bounded either way.
"""

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.outbox.service import AfterCommitPublisher
from pulse.topics.fanout import run_fanout_chunk

log = logging.getLogger(__name__)


class FanoutRunner:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publisher: AfterCommitPublisher,
        *,
        rules: AcceptanceSettings,
        chunk_size: int,
        publish_grace: timedelta,
        idle_seconds: float,
    ) -> None:
        self._session_factory = session_factory
        self._publisher = publisher
        self._rules = rules
        self._chunk_size = chunk_size
        self._publish_grace = publish_grace
        self._idle_seconds = idle_seconds
        self._stopping = threading.Event()

    def run_once(self) -> bool:
        """One chunk of one running fan-out, committed, then published; False when none was waiting."""
        with transaction(self._session_factory) as session:
            accepted = run_fanout_chunk(
                session, rules=self._rules, chunk_size=self._chunk_size, publish_grace=self._publish_grace
            )
        if accepted is None:
            return False
        self._publisher.publish(
            [(item.outbox_id, item.notification) for item in accepted if item.outbox_id is not None]
        )
        return True

    def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("a fan-out chunk failed; trying again shortly")
                busy = False
            if not busy:
                self._stopping.wait(self._idle_seconds)

    def stop(self) -> None:
        self._stopping.set()
