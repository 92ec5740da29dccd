"""The gateway's cache of verified API keys: the requests that miss it together share one lookup."""

import asyncio
import uuid

import pytest

from pulse.tenants.service import Principal, Scope
from services.api.deps import ApiKeyCache

PRINCIPAL = Principal(tenant_id=uuid.uuid4(), tenant_name="acme", scopes=frozenset({Scope.SEND}))


class KeyTable:
    """Stands in for the database's api_keys: counts the lookups, each taking a while."""

    def __init__(self, answer: Principal | Exception | None) -> None:
        self.answer = answer
        self.lookups = 0

    async def look_up(self) -> Principal | None:
        self.lookups += 1
        await asyncio.sleep(0.05)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def _requests(cache: ApiKeyCache, table: KeyTable, count: int) -> list[Principal | None]:
    return await asyncio.gather(*(cache.principal("key-hash", table.look_up) for _ in range(count)))


def test_requests_that_miss_the_cache_together_share_one_lookup_and_later_ones_none() -> None:
    async def scenario() -> list[Principal | None]:
        cache, table = ApiKeyCache(ttl_seconds=60), KeyTable(PRINCIPAL)
        together = await _requests(cache, table, 32)
        later = await _requests(cache, table, 8)
        assert table.lookups == 1
        return together + later

    assert asyncio.run(scenario()) == [PRINCIPAL] * 40


def test_an_unknown_key_is_looked_up_again_and_a_failed_lookup_reaches_every_request() -> None:
    async def scenario() -> None:
        cache, unknown = ApiKeyCache(ttl_seconds=60), KeyTable(None)
        assert await _requests(cache, unknown, 4) == [None] * 4
        assert await _requests(cache, unknown, 4) == [None] * 4
        assert unknown.lookups == 2

        failing = KeyTable(ConnectionError("database down"))
        with pytest.raises(ConnectionError):
            await _requests(cache, failing, 4)
        assert failing.lookups == 1

    asyncio.run(scenario())
