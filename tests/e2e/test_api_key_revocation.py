"""A key revoked through one gateway process is refused by another within 5 s, although that one had
just verified it (and remembers verified keys for PULSE_AUTH_CACHE_SECONDS)."""

import time
from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Infrastructure, Stack, running_stack
from pulse.tenants.service import Scope
from tests.conftest import wait_until

REVOCATION_SECONDS = 5.0


@pytest.fixture(scope="module")
def two_gateways(infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(infrastructure, tmp_path_factory.mktemp("revocation"), services=("api",)) as stack:
        stack.start_replica("api", "api_2")
        yield stack


def test_a_key_revoked_through_one_gateway_is_refused_by_the_other_within_5_s(
    two_gateways: Stack, infrastructure: Infrastructure
) -> None:
    admin_key = infrastructure.create_tenant_with_key("revocation", Scope.ADMIN, Scope.SEND, Scope.READ)
    first = httpx.Client(base_url=two_gateways.gateway_url("api"), timeout=10)
    second = httpx.Client(base_url=two_gateways.gateway_url("api_2"), timeout=10)
    issued = first.post(
        "/v1/api-keys", json={"scopes": ["read"], "name": "doomed"}, headers=_bearer(admin_key)
    ).json()
    # The second gateway verifies the key, and so remembers it.
    assert second.get("/v1/notifications", headers=_bearer(issued["key"])).status_code == 200

    revoked = first.delete(f"/v1/api-keys/{issued['id']}", headers=_bearer(admin_key))
    assert revoked.status_code == 204, revoked.text
    revoked_at = time.monotonic()

    def refused() -> bool:
        return second.get("/v1/notifications", headers=_bearer(issued["key"])).status_code == 401

    wait_until(refused, timeout=REVOCATION_SECONDS, what="the second gateway to refuse the revoked key")
    print(f"\nrefused {time.monotonic() - revoked_at:.2f} s after the revocation")
    # Keys that were not revoked still work there.
    assert second.get("/v1/notifications", headers=_bearer(admin_key)).status_code == 200


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
