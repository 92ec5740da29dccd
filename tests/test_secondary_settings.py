"""The secondary SMTP relay, Twilio account and FCM project: one nested block each
(`PULSE_<PROVIDER>_SECONDARY__<FIELD>`), whose unset fields take the primary's values."""

import pytest
from pydantic import SecretStr

from pulse.settings import FcmSettings, SmtpSettings, TwilioSettings


def test_no_secondary_unless_its_host_or_base_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SmtpSettings().secondary_settings() is None
    assert TwilioSettings().secondary_settings() is None
    monkeypatch.setenv("PULSE_FCM_SECONDARY__PROJECT_ID", "pulse-backup")  # but no base URL
    assert FcmSettings().secondary_settings() is None


def test_the_smtp_secondary_takes_the_primary_s_values_it_does_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__HOST", "smtp.backup.example")
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__USE_TLS", "false")
    primary = SmtpSettings(port=465, username="pulse", password=SecretStr("p"), use_tls=True)
    secondary = primary.secondary_settings()
    assert secondary is not None
    assert (secondary.host, secondary.port, secondary.username, secondary.use_tls) == (
        "smtp.backup.example",
        465,
        "pulse",
        False,
    )
    assert secondary.password == primary.password and secondary.secondary_settings() is None


def test_the_smtp_secondary_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__HOST", "smtp.backup.example")
    monkeypatch.setenv("PULSE_SMTP_SECONDARY__PASSWORD", "backup-very-secret")
    settings = SmtpSettings()
    secondary = settings.secondary_settings()
    assert secondary is not None and secondary.password is not None
    assert secondary.password.get_secret_value() == "backup-very-secret"
    assert "backup-very-secret" not in repr(settings) + repr(secondary)


def test_the_fcm_secondary_takes_the_primary_s_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_FCM_SECONDARY__BASE_URL", "https://fcm.backup.example")
    monkeypatch.setenv("PULSE_FCM_SECONDARY__PROJECT_ID", "pulse-backup")
    secondary = FcmSettings(access_token=SecretStr("t")).secondary_settings()
    assert secondary is not None
    assert (secondary.base_url, secondary.project_id) == ("https://fcm.backup.example", "pulse-backup")
    assert secondary.access_token.get_secret_value() == "t" and secondary.secondary_settings() is None
