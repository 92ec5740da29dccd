"""The pure parts of `make bench-realtime`: users for the connections, the burst's bodies, how many
copies the clients should receive, and the percentiles it reports."""

import json
import resource
from collections import Counter

import pytest

from bench.realtime import (
    expected_copies,
    inapp_bodies,
    percentiles_ms,
    raise_open_files_limit,
    user_ids,
)


def test_connections_are_spread_over_as_few_users_as_the_per_user_limit_allows() -> None:
    assert len(user_ids(10_000, 5)) == 2000
    assert len(user_ids(10_001, 5)) == 2001
    assert len(set(user_ids(10_000, 5))) == 2000


def test_the_burst_sends_in_app_to_each_user_in_turn() -> None:
    users = ["a", "b", "c"]

    bodies = [json.loads(body) for body in inapp_bodies(4, users)]

    assert [body["recipient"] for body in bodies] == ["a", "b", "c", "a"]
    assert {body["channel"] for body in bodies} == {"inapp"}


def test_each_send_is_expected_once_per_open_socket_of_its_user() -> None:
    # Users 0 and 1 have 5 sockets each, user 2 lost one, user 3 none: sends go to 0, 1, 2, 3, 0.
    connected = Counter({0: 5, 1: 5, 2: 4})

    assert expected_copies(5, connected, users=4) == 5 + 5 + 4 + 0 + 5


def test_percentiles_are_in_milliseconds() -> None:
    seconds = [index / 1000 for index in range(1, 101)]  # 1 … 100 ms

    summary = percentiles_ms(seconds)

    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.0, abs=0.1)
    assert summary["max"] == 100.0
    assert percentiles_ms([0.25]) == {"p50": 250.0, "p95": 250.0, "p99": 250.0, "max": 250.0}
    assert percentiles_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_the_open_files_limit_is_raised_only_as_far_as_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    assert raise_open_files_limit(soft) == soft
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(SystemExit, match="open files"):
            raise_open_files_limit(hard + 1)
