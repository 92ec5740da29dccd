"""The secondary SMTP relay and FCM project: settings of their own, defaulting to the primary's."""

import pytest
from pydantic import SecretStr

from pulse.settings import FcmSettings, SmtpSettings


def test_no_secondary_unless_its_host_or_base_url_is_set() -> None:
    assert SmtpSettings().secondary() is None
    assert FcmSettings().secondary() is None


def test_the_smtp_secondary_takes_the_primary_s_values_it_does_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_SMTP_SECONDARY_HOST", "smtp.backup.example")
    monkeypatch.setenv("PULSE_SMTP_SECONDARY_USE_TLS", "false")
    primary = SmtpSettings(port=465, username="pulse", password=SecretStr("p"), use_tls=True)
    secondary = primary.secondary()
    assert secondary is not None
    assert (secondary.host, secondary.port, secondary.username, secondary.use_tls) == (
        "smtp.backup.example",
        465,
        "pulse",
        False,
    )
    assert secondary.password == primary.password and secondary.secondary() is None


def test_the_fcm_secondary_takes_the_primary_s_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_FCM_SECONDARY_BASE_URL", "https://fcm.backup.example")
    monkeypatch.setenv("PULSE_FCM_SECONDARY_PROJECT_ID", "pulse-backup")
    secondary = FcmSettings(access_token=SecretStr("t")).secondary()
    assert secondary is not None
    assert (secondary.base_url, secondary.project_id) == ("https://fcm.backup.example", "pulse-backup")
    assert secondary.access_token.get_secret_value() == "t" and secondary.secondary() is None
