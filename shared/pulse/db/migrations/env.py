"""Alembic environment: migrates the database named by the caller (see pulse.db.migrate)."""

from alembic import context
from sqlalchemy import create_engine, text

from pulse.db.models import Base

# Any stable 64-bit number: serialises concurrent `pulse-admin init` runs.
MIGRATION_LOCK_ID = 7_231_004_512


def run_migrations_online() -> None:
    engine = create_engine(context.config.attributes["database_url"])
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        try:
            context.configure(connection=connection, target_metadata=Base.metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


run_migrations_online()
