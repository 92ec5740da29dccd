"""Provider send-rate buckets against the real PostgreSQL (a private database): how they are written,
shared between concurrent takers, refilled, and slowed down by a provider's throttling."""

import dataclasses
import threading
import time
import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from pulse.channels.webhook import WebhookProvider
from pulse.db import transaction
from pulse.db.models import ProviderSendBucket
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Claim
from pulse.delivery.rates import SendRates, delete_idle_buckets
from pulse.send_rate import SendRate
from pulse.settings import FcmSettings, SmtpSettings, TwilioSettings, WebhookSettings
from pulse.vocabulary import Channel
from tests.conftest import wait_until
from tests.delivery.test_circuit import CLAIM, ScriptedProvider


def test_rates_are_written_per_second_minute_or_hour_with_an_optional_burst() -> None:
    assert SendRate.parse("14/s") == SendRate(per_second=14, burst=14)
    assert SendRate.parse("600/m") == SendRate(per_second=10, burst=10)
    assert SendRate.parse("90/h, burst=5") == SendRate(per_second=0.025, burst=5)
    assert SendRate.parse("1/h").burst == 1  # A second's worth, but at least one.
    for wrong in ("14", "14/d", "0/s", "-1/s", "14/s,burst=0", "fast"):
        with pytest.raises(ValueError, match=r"send rate|burst|above zero"):
            SendRate.parse(wrong)


def test_limits_load_from_the_environment_and_bad_ones_name_their_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_SMTP_RATE_LIMIT", "14/s")
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__HOST", "smtp.backup.example")
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__RATE_LIMIT", "2/s,burst=1")
    monkeypatch.setenv("PULSE_WEBHOOK_RATE_LIMIT_PER_HOST", "")
    smtp = SmtpSettings()
    secondary = smtp.secondary_settings()
    assert smtp.rate_limit == SendRate(per_second=14, burst=14)
    assert secondary is not None and secondary.rate_limit == SendRate(per_second=2, burst=1)
    assert WebhookSettings().rate_limit_per_host is None  # Empty: unlimited.
    monkeypatch.setenv("PULSE_TWILIO_RATE_LIMIT", "60/m")
    monkeypatch.setenv("PULSE_TWILIO_SECONDARY__BASE_URL", "https://api.twilio.example")
    monkeypatch.setenv("PULSE_FCM_RATE_LIMIT", "3600/h,burst=100")
    twilio = TwilioSettings()
    assert twilio.rate_limit == SendRate(per_second=1, burst=1)
    twilio_secondary = twilio.secondary_settings()
    assert twilio_secondary is not None and twilio_secondary.rate_limit is None  # Its own: unset.
    assert FcmSettings().rate_limit == SendRate(per_second=1, burst=100)

    monkeypatch.setenv("PULSE_SMTP_RATE_LIMIT", "14 per second")
    with pytest.raises(ValidationError, match="rate_limit"):
        SmtpSettings()


def _claim(recipient: str = "ada@example.com", channel: Channel = Channel.EMAIL) -> Claim:
    return dataclasses.replace(CLAIM, notification_id=uuid.uuid4(), recipient=recipient, channel=channel)


@pytest.fixture
def provider_name() -> str:
    """A provider of its own per test: its bucket starts full."""
    return f"smtp-{uuid.uuid4().hex[:8]}"


def _chain(name: str) -> ProviderChain:
    return ProviderChain([ScriptedProvider(name)], BreakerSettings())


def _schedule(factory: sessionmaker[Session], rates: SendRates, chain: ProviderChain, count: int) -> tuple:
    with transaction(factory) as session:
        return rates.schedule(session, [_claim() for _ in range(count)], chain)


def test_a_batch_books_the_burst_now_and_the_rest_one_rate_step_apart(
    factory: sessionmaker[Session], provider_name: str
) -> None:
    rates = SendRates({provider_name: SendRate(per_second=5, burst=3)}, max_wait_seconds=1)

    sends, short = _schedule(factory, rates, _chain(provider_name), 12)

    # 3 tokens now, 5 more within the second it may wait; the other 4 come back once they can all be
    # booked: their last token comes 1.8 s from now, one second (the wait allowed) after 0.8 s.
    delays = sorted(send.delay for send in sends)
    assert len(sends) == 8 and len(short) == 4
    assert delays[:3] == [0, 0, 0]
    assert delays[3:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=0.05)
    assert [wait for _, wait in short] == [pytest.approx(0.8, abs=0.05)] * 4


def test_no_limit_costs_no_database_round_trip(provider_name: str) -> None:
    chain = _chain(provider_name)
    rates = SendRates({"another-provider": SendRate(per_second=1, burst=1)}, max_wait_seconds=1)
    claims = [_claim() for _ in range(3)]

    class NoDatabase(Session):
        def execute(self, *args: object, **kwargs: object) -> object:
            raise AssertionError("no statement expected")

    sends, short = rates.schedule(NoDatabase(), claims, chain)

    assert [(send.claim, send.delay) for send in sends] == [(claim, 0.0) for claim in claims] and not short
    assert not SendRates({"smtp": None}, max_wait_seconds=1).limited


def test_concurrent_takers_on_separate_connections_never_exceed_the_rate_plus_the_burst(
    factory: sessionmaker[Session], provider_name: str
) -> None:
    rate = SendRate(per_second=20, burst=5)
    rates = SendRates({provider_name: rate}, max_wait_seconds=0)  # Only tokens there now.
    chain = _chain(provider_name)
    granted: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def take() -> None:
        while not stop.is_set():
            sends, _short = _schedule(factory, rates, chain, 3)
            with lock:
                granted.append(len(sends))

    takers = [threading.Thread(target=take) for _ in range(6)]
    started = time.monotonic()
    for taker in takers:
        taker.start()
    wait_until(lambda: sum(granted) >= 40, timeout=60, what="40 tokens taken")
    stop.set()
    for taker in takers:
        taker.join()
    elapsed = time.monotonic() - started

    # Every take ran within `elapsed` (on the database's clock, less): the burst and what refilled.
    assert sum(granted) <= rate.burst + rate.per_second * elapsed
    assert granted.count(0) > 0, "takers never had to go without: the test proves nothing"


def test_an_emptied_bucket_refills_at_its_rate(factory: sessionmaker[Session], provider_name: str) -> None:
    rates = SendRates({provider_name: SendRate(per_second=4, burst=2)}, max_wait_seconds=0)
    chain = _chain(provider_name)
    assert len(_schedule(factory, rates, chain, 5)[0]) == 2

    sends, short = _schedule(factory, rates, chain, 1)
    assert not sends and [wait for _, wait in short] == [pytest.approx(0.25, abs=0.25)]

    wait_until(lambda: _schedule(factory, rates, chain, 1)[0], timeout=10, what="a token refilled")


def test_a_throttle_pauses_the_shared_bucket_then_halves_its_rate_which_recovers(
    factory: sessionmaker[Session], provider_name: str
) -> None:
    rate = SendRate(per_second=10, burst=10)
    rates = SendRates({provider_name: rate}, max_wait_seconds=0)
    chain = _chain(provider_name)
    provider = chain.named(provider_name)
    with transaction(factory) as session:
        rates.throttled(session, [(provider, _claim(), 1.5)])
        rates.throttled(session, [(provider, _claim(), 1.0)])  # While paused: no second halving.

    sends, short = _schedule(factory, rates, chain, 2)
    assert not sends and all(wait >= 1 for _, wait in short)
    with factory() as session:
        bucket = session.scalars(
            select(ProviderSendBucket).where(ProviderSendBucket.key == provider_name)
        ).one()
        assert bucket.slowdown == 0.5 and bucket.tokens <= 0

    def rate_now() -> float:
        with transaction(factory) as session:
            booking = rates._book(session, {provider_name: (1, rate)})[provider_name]
        return booking.rate if booking.paused_for == 0 else 0.0

    after_pause = wait_until(rate_now, timeout=30, what="the pause to end")
    assert after_pause < 0.75 * rate.per_second
    wait_until(lambda: rate_now() == rate.per_second, timeout=60, what="the rate to recover")


def test_a_per_host_limit_gives_each_receiver_host_its_own_bucket(factory: sessionmaker[Session]) -> None:
    webhooks = WebhookProvider(WebhookSettings(), lambda tenant_id: "whsec_" + "A" * 32)
    rates = SendRates({webhooks.name: SendRate(per_second=1, burst=1)}, max_wait_seconds=0)
    chain = ProviderChain([webhooks], BreakerSettings())
    host = f"{uuid.uuid4().hex[:8]}.example"
    urls = (f"https://a.{host}/1", f"https://a.{host}/2", f"https://b.{host}/", f"https://b.{host}:8443/")
    claims = [_claim(url, Channel.WEBHOOK) for url in urls]

    with transaction(factory) as session:
        sends, short = rates.schedule(session, claims, chain)
    webhooks.close()

    assert [send.claim for send in sends] == [claims[0], claims[2], claims[3]]
    assert [claim for claim, _ in short] == [claims[1]]


def test_buckets_idle_for_longer_than_the_retention_are_forgotten(factory: sessionmaker[Session]) -> None:
    host = f"webhook {uuid.uuid4().hex[:8]}.example:443"
    keys = {name: f"{host}/{name}" for name in ("idle", "booked", "paused")}
    with transaction(factory) as session:
        for name, key in keys.items():
            session.add(
                ProviderSendBucket(
                    key=key,
                    tokens=1,
                    refilled_at=text("now() - interval '2 hours'" if name != "booked" else "now()"),
                    paused_until=text("now() + interval '1 minute'") if name == "paused" else None,
                )
            )

    with transaction(factory) as session:
        delete_idle_buckets(session, idle_for_seconds=3600)

    with transaction(factory) as session:
        left = set(
            session.scalars(select(ProviderSendBucket.key).where(ProviderSendBucket.key.in_(keys.values())))
        )
    assert left == {keys["booked"], keys["paused"]}
