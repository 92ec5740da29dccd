"""End-user tokens: what they carry, and every way a token that is not ours is refused, saying why."""

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from pulse.inapp.tokens import AUDIENCE, EndUser, InvalidToken, issue_token, read_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
ADA = EndUser(tenant_id=uuid.uuid4(), user_id="ada-42")


def test_a_token_reads_back_as_its_end_user_and_expires_when_it_says() -> None:
    before = datetime.now(UTC)
    token, expires_at = issue_token(SECRET, ADA, 600)
    assert read_token(SECRET, token) == (ADA, expires_at)
    assert before + timedelta(seconds=599) <= expires_at <= datetime.now(UTC) + timedelta(seconds=600)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert (claims["sub"], claims["tenant"], claims["exp"]) == (
        "ada-42",
        str(ADA.tenant_id),
        int(expires_at.timestamp()),
    )


def test_an_expired_token_is_refused_as_expired() -> None:
    token, _ = issue_token(SECRET, ADA, -1)
    with pytest.raises(InvalidToken, match="expired"):
        read_token(SECRET, token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token, _ = issue_token("another-secret-of-the-same-generous-length", ADA, 600)
    with pytest.raises(InvalidToken, match="signature"):
        read_token(SECRET, token)


def test_a_token_whose_tenant_was_changed_no_longer_verifies() -> None:
    token, _ = issue_token(SECRET, ADA, 600)
    header, _, signature = token.split(".")
    other_tenant = jwt.encode(
        {"sub": "ada-42", "tenant": str(uuid.uuid4()), "aud": AUDIENCE, "iat": 0, "exp": 4102444800},
        "forger-does-not-know-the-secret-but-tries-anyway",
        algorithm="HS256",
    )
    forged = ".".join([header, other_tenant.split(".")[1], signature])
    with pytest.raises(InvalidToken, match="signature"):
        read_token(SECRET, forged)


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(
        {"sub": "ada-42", "tenant": str(ADA.tenant_id), "aud": AUDIENCE, "iat": 0, "exp": 4102444800},
        None,
        algorithm="none",
    )
    with pytest.raises(InvalidToken):
        read_token(SECRET, unsigned)


@pytest.mark.parametrize("not_a_jwt", ["pk_3q2VbYp8rQ6m0c1sW4kK", "", "a.b.c"])
def test_an_api_key_or_garbage_is_a_malformed_token(not_a_jwt: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        read_token(SECRET, not_a_jwt)


def test_another_jwt_signed_with_the_same_secret_is_not_an_end_user_token() -> None:
    other = jwt.encode(
        {"sub": "ada-42", "tenant": str(ADA.tenant_id), "iat": 0, "exp": 4102444800, "aud": "pulse:admin"},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="audience"):
        read_token(SECRET, other)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"sub": "ada-42", "tenant": str(ADA.tenant_id), "aud": AUDIENCE, "iat": 0}, "`exp`"),
        ({"sub": "ada-42", "aud": AUDIENCE, "iat": 0, "exp": 4102444800}, "`tenant`"),
        ({"sub": "ada-42", "tenant": "acme", "aud": AUDIENCE, "iat": 0, "exp": 4102444800}, "tenant id"),
    ],
)
def test_a_token_without_a_needed_claim_is_refused_naming_it(claims: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        read_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))
