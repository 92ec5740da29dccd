"""pulse-admin: prepare the database and broker, manage tenants and API keys."""

import argparse
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kombu import Connection
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from pulse.admin import api_keys
from pulse.admin.settings import AdminSettings
from pulse.audit.service import Operator, record_change
from pulse.db import make_engine, make_session_factory, transaction
from pulse.db.migrate import upgrade_to_head
from pulse.db.models import Notification, Tenant
from pulse.dead_letters.service import ReplaySelection, list_dead_letters, replay, replay_one
from pulse.errors import InvalidInput, NotFound, PulseError
from pulse.messaging.topology import declare_topology
from pulse.startup import load_settings
from pulse.tenants.service import configure_tenant, create_tenant, tenant_named
from pulse.vocabulary import Channel
from pulse.webhooks.secrets import get_secret, rotate_secret

log = logging.getLogger("pulse.admin")


def _wait_for(what: str, check: Callable[[], None], seconds: float) -> None:
    waiting = retry(
        retry=retry_if_exception_type(Exception),
        stop=stop_after_delay(seconds),
        wait=wait_fixed(1),
        reraise=True,
        before_sleep=lambda state: log.info(
            "waiting for %s: %s", what, state.outcome and state.outcome.exception()
        ),
    )
    waiting(check)()


def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if the server does not have it yet."""
    url = make_url(database_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
                log.info("created database %s", url.database)
    finally:
        server.dispose()


def init(settings: AdminSettings) -> None:
    database_url = settings.database.url
    _wait_for("PostgreSQL", lambda: ensure_database(database_url), settings.wait_seconds)
    upgrade_to_head(database_url)
    log.info("database schema is up to date")

    def declare() -> None:
        with Connection(
            settings.broker.url, connect_timeout=settings.broker.connect_timeout_seconds
        ) as connection:
            declare_topology(connection)

    _wait_for("RabbitMQ", declare, settings.wait_seconds)
    log.info("broker topology declared")


def _with_session(settings: AdminSettings, work: Callable[..., str]) -> str:
    engine = make_engine(settings.database)
    try:
        with transaction(make_session_factory(engine)) as session:
            return work(session)
    finally:
        engine.dispose()


def _tenant_id(session: Session, name: str | None) -> uuid.UUID | None:
    if name is None:
        return None
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return tenant_id


def _describe(tenant: Tenant) -> str:
    quiet_hours = tenant.quiet_hours or "default (PULSE_QUIET_HOURS)"
    priority = tenant.default_priority or "default (normal)"
    if tenant.rate_limit is None:
        rate_limit = "default (PULSE_RATE_LIMIT)"
    else:
        rate_limit = "off" if tenant.rate_limit == 0 else f"{tenant.rate_limit} sends"
    window = tenant.rate_limit_window_seconds or "default (PULSE_RATE_LIMIT_WINDOW_SECONDS)"
    if tenant.sends_per_minute is None:
        quota = "default (PULSE_TENANT_SENDS_PER_MINUTE)"
    else:
        quota = "off" if tenant.sends_per_minute == 0 else f"{tenant.sends_per_minute} sends per minute"
    return (
        f"tenant {tenant.name}: timezone {tenant.timezone}, quiet hours {quiet_hours}, "
        f"default priority {priority}, rate limit {rate_limit} per window of {window} s, quota {quota}"
    )


_TENANT_SETTINGS = (
    "timezone",
    "quiet_hours",
    "default_priority",
    "rate_limit",
    "rate_limit_window_seconds",
    "sends_per_minute",
)


def set_tenant_settings(session: Session, args: argparse.Namespace) -> str:
    tenant = tenant_named(session, args.name)
    before = {name: getattr(tenant, name) for name in _TENANT_SETTINGS}
    configure_tenant(
        session,
        name=args.name,
        timezone=args.timezone,
        quiet_hours=args.quiet_hours,
        default_priority=args.default_priority,
        rate_limit=args.rate_limit,
        rate_limit_window_seconds=args.rate_limit_window,
        sends_per_minute=args.sends_per_minute,
    )
    after = {name: getattr(tenant, name) for name in _TENANT_SETTINGS}
    record_change(
        session, Operator(tenant.id), "tenant.configure", "tenant", tenant.id, before=before, after=after
    )
    return _describe(tenant)


def webhook_secret(session: Session, args: argparse.Namespace) -> str:
    tenant_id = _tenant_id(session, args.tenant)
    assert tenant_id is not None
    if not args.rotate:
        return get_secret(session, tenant_id)
    secret = rotate_secret(session, tenant_id)
    record_change(session, Operator(tenant_id), "webhook_secret.rotate", "webhook_secret", tenant_id)
    return secret


def dlq_list(session: Session, args: argparse.Namespace) -> str:
    rows = list_dead_letters(
        session,
        tenant_id=_tenant_id(session, args.tenant),
        channel=args.channel and Channel(args.channel),
        limit=args.limit,
    )
    lines = [f"{'id':36}  {'channel':8}  {'failed at':25}  {'attempts':>8}  last error"]
    for row in rows:
        failed_at = row.failed_at.isoformat(timespec="seconds") if row.failed_at else ""
        lines.append(
            f"{row.id}  {row.channel:8}  {failed_at:25}  {row.attempt_count:>8}  {row.last_error or ''}"
        )
    return "\n".join(lines)


def dlq_replay(session: Session, args: argparse.Namespace) -> str:
    tenant_id = _tenant_id(session, args.tenant)
    if args.id:
        replay_one(session, tenant_id=tenant_id, notification_id=args.id)
        owner = session.scalar(select(Notification.tenant_id).where(Notification.id == args.id))
        assert owner is not None
        record_change(session, Operator(owner), "dead_letter.replay", "notification", args.id)
        return f"replayed 1 ({args.id})"
    if not args.channel:
        raise InvalidInput("give --id, or --channel (with --since/--until to narrow it)")
    ids = replay(
        session,
        ReplaySelection(
            tenant_id=tenant_id,
            channel=Channel(args.channel),
            failed_since=args.since,
            failed_before=args.until,
        ),
    )
    # One entry in the log of each tenant whose notifications were replayed, with its count.
    counts = session.execute(
        select(Notification.tenant_id, func.count())
        .where(Notification.id.in_(ids))
        .group_by(Notification.tenant_id)
    ).all()
    for owner, count in counts:
        record_change(
            session,
            Operator(owner),
            "dead_letter.replay_bulk",
            "dead_letters",
            args.channel,
            after={"channel": args.channel, "since": args.since, "until": args.until, "replayed": count},
        )
    return f"replayed {len(ids)}"


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def _utc_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="pulse-admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="wait for PostgreSQL and RabbitMQ, migrate, declare the topology")
    tenant = commands.add_parser("create-tenant", help="create a tenant (no-op if it exists)")
    tenant.add_argument("name")
    configure = commands.add_parser(
        "configure-tenant",
        help="set a tenant's time zone, quiet hours, default priority, rate limit and quota",
    )
    configure.add_argument("name")
    configure.add_argument("--timezone", help="IANA name, e.g. Europe/Paris: the default for its recipients")
    configure.add_argument(
        "--quiet-hours", help="HH:MM-HH:MM in recipients' local time, 'off', or 'default' (PULSE_QUIET_HOURS)"
    )
    configure.add_argument(
        "--default-priority", help="priority of sends that name none: critical|high|normal|low, or 'default'"
    )
    configure.add_argument(
        "--rate-limit",
        help="sends per (user or recipient, channel) per window: a number, 'off', or 'default'",
    )
    configure.add_argument("--rate-limit-window", type=_positive_int, help="the window, in seconds")
    configure.add_argument(
        "--sends-per-minute",
        help="the tenant's quota, every channel together: a number, 'off', or 'default'",
    )
    key = commands.add_parser("create-api-key", help="issue an API key; printed once, as the last line")
    key.add_argument("--tenant", required=True)
    key.add_argument("--scopes", default="send,read", help="comma-separated: send,read,admin")
    key.add_argument("--name", help="what the key is for (up to 100 characters)")
    key.add_argument(
        "--expires-at",
        type=_utc_datetime,
        help="when it stops working (ISO 8601, naive = UTC); default never",
    )
    listing_keys = commands.add_parser(
        "list-api-keys",
        help="a tenant's API keys (prefix, scopes, created, expires, last used, revoked, name), never their "
        "secrets",
    )
    listing_keys.add_argument("--tenant", required=True)
    revoking = commands.add_parser("revoke-api-key", help="revoke a tenant's API key, named by its prefix")
    revoking.add_argument("--tenant", required=True)
    revoking.add_argument("prefix", help="as list-api-keys shows it (the key's first 10 characters)")
    commands.add_parser(
        "check-api-key",
        help="read a key on stdin (not argv, which `ps` shows); exit 0 and name its tenant if it works",
    )
    secret = commands.add_parser(
        "webhook-secret", help="a tenant's webhook signing secret (created if missing), as the last line"
    )
    secret.add_argument("tenant")
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="replace it with a new one first (the old one still signs for PULSE_WEBHOOK_SECRET_GRACE_HOURS)",
    )
    dlq = commands.add_parser("dlq", help="dead letters: failed notifications").add_subparsers(
        dest="dlq_command", required=True
    )
    listing = dlq.add_parser("list", help="failed notifications, most recent failure first")
    replaying = dlq.add_parser("replay", help="re-queue failed notifications with a fresh attempt budget")
    for sub in (listing, replaying):
        sub.add_argument("--channel", choices=list(Channel))
        sub.add_argument("--tenant", help="tenant name (default: every tenant)")
    listing.add_argument("--limit", type=_positive_int, default=50)
    replaying.add_argument("--id", type=uuid.UUID, help="one notification")
    replaying.add_argument("--since", type=_utc_datetime, help="failed at or after (ISO 8601, naive = UTC)")
    replaying.add_argument("--until", type=_utc_datetime, help="failed before (ISO 8601, naive = UTC)")
    args = parser.parse_args(argv)

    settings = load_settings(AdminSettings, "pulse-admin")
    commands_by_name: dict[str, Callable[[], str | None]] = {
        "init": lambda: init(settings),
        "create-tenant": lambda: _with_session(
            settings, lambda session: f"tenant {args.name} ({create_tenant(session, name=args.name).id})"
        ),
        "configure-tenant": lambda: _with_session(
            settings, lambda session: set_tenant_settings(session, args)
        ),
        "create-api-key": lambda: _with_session(settings, lambda session: api_keys.issue(session, args)),
        "list-api-keys": lambda: _with_session(settings, lambda session: api_keys.listing(session, args)),
        "revoke-api-key": lambda: _with_session(settings, lambda session: api_keys.revoke(session, args)),
        "check-api-key": lambda: _with_session(
            settings, lambda session: api_keys.check(session, sys.stdin.read().strip())
        ),
        "webhook-secret": lambda: _with_session(settings, lambda session: webhook_secret(session, args)),
        "dlq": lambda: _with_session(
            settings, lambda session: (dlq_list if args.dlq_command == "list" else dlq_replay)(session, args)
        ),
    }
    try:
        output = commands_by_name[args.command]()
        if output is not None:
            print(output)
    except PulseError as error:
        print(f"pulse-admin: {error}", file=sys.stderr)
        return 2
    except OperationalError as error:
        print(f"pulse-admin: database unavailable: {error.orig}", file=sys.stderr)
        return 1
    except ProgrammingError as error:
        print(
            f"pulse-admin: {error.orig} (is the schema up to date? run `pulse-admin init`)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
