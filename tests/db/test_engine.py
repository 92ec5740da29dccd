"""The engine every service builds (pulse.db.make_engine), against the test database."""

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from devtools.stack import Infrastructure
from pulse.db import make_engine
from pulse.settings import DatabaseSettings


def test_a_statement_running_longer_than_the_timeout_is_cancelled(infrastructure: Infrastructure) -> None:
    engine = make_engine(DatabaseSettings(url=infrastructure.database_url, statement_timeout_seconds=0.2))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == "200ms"
            started = time.monotonic()
            with pytest.raises(OperationalError, match="statement timeout"):
                connection.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 2
    finally:
        engine.dispose()


def test_every_connection_has_a_statement_timeout_by_default(infrastructure: Infrastructure) -> None:
    engine = make_engine(DatabaseSettings(url=infrastructure.database_url))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == "30s"
    finally:
        engine.dispose()
