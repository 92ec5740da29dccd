"""What the realtime service's handlers share for the life of the process."""

import asyncio
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.realtime import connections
from services.realtime.hub import SERVICE_RESTART, Hub
from services.realtime.settings import RealtimeSettings

log = logging.getLogger(__name__)
_Result = TypeVar("_Result")


def new_process_id() -> str:
    """Names this process in its connection rows and its queue: host, pid and a random part (pids repeat
    across containers and restarts)."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"


@dataclass
class Realtime:
    settings: RealtimeSettings
    session_factory: sessionmaker[Session]
    hub: Hub
    process_id: str = field(default_factory=new_process_id)

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.settings.presence.stale_after_seconds)

    async def in_transaction(self, work: Callable[[Session], _Result]) -> _Result:
        """Run `work` in one transaction in a worker thread: the event loop never waits on PostgreSQL."""

        def run() -> _Result:
            with transaction(self.session_factory) as session:
                return work(session)

        return await asyncio.to_thread(run)

    async def keep_alive(self) -> None:
        """Every heartbeat: refresh this process's connection rows and remove other processes' stale
        ones."""
        while True:
            await asyncio.sleep(self.settings.presence.heartbeat_seconds)
            try:
                await self._beat()
            except Exception as error:  # noqa: BLE001 - PostgreSQL away: try again next heartbeat.
                log.warning("could not refresh the connection rows: %r", error)

    async def _beat(self) -> None:
        # A socket whose row is gone (this process stalled past the staleness limit and another process
        # expired it) no longer counts against its user's limit: it is closed, the client reconnects.
        held = {user_socket.connection_id: user_socket for user_socket in self.hub.sockets()}

        def refresh(session: Session) -> set[uuid.UUID]:
            alive = connections.refresh(session, held.keys())
            connections.expire_stale(session, stale_after=self.stale_after)
            return alive

        alive = await self.in_transaction(refresh)
        for connection_id, user_socket in held.items():
            if connection_id not in alive:
                user_socket.close(SERVICE_RESTART, "connection expired; reconnect", why="expired")
