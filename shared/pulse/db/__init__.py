"""PostgreSQL access: engine and session factories, and the transaction scope used at every edge."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from pulse.settings import DatabaseSettings


def make_engine(settings: DatabaseSettings) -> Engine:
    return create_engine(
        settings.url,
        pool_size=settings.pool_size,
        # Overflow connections are closed when returned: a small margin, or every burst would pay
        # for new PostgreSQL backends.
        max_overflow=5,
        # No pre-ping (it costs a round trip per checkout): after a database restart the first
        # statement on a dead connection fails, SQLAlchemy discards the whole pool, and callers retry.
        pool_timeout=settings.connect_timeout_seconds,
        connect_args={
            "connect_timeout": max(2, round(settings.connect_timeout_seconds)),
            "options": f"-c statement_timeout={round(settings.statement_timeout_seconds * 1000)}",
        },
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back when it raises."""
    with session_factory() as session, session.begin():
        yield session
