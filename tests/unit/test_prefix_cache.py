"""The worker's cache of as-of log prefixes: bounded by entries, never wrong."""

from __future__ import annotations

import pytest

from escrowguard.errors import StoreError
from escrowguard.stream_app.store import PrefixCache


def test_extends_in_place_and_counts_entries() -> None:
    cache = PrefixCache(max_entries=100)
    log = cache.extend("pp:a", 0, [1, 2, 3])
    assert cache.extend("pp:a", 3, [4]) is log == [1, 2, 3, 4]
    assert cache.have("pp:a") == 4 and cache.entries == 4


def test_a_shorter_start_replaces_the_tail() -> None:
    cache = PrefixCache()
    cache.extend("mv:m", 0, ["a", "b", "c"])
    assert cache.extend("mv:m", 1, ["x"]) == ["a", "x"]
    assert cache.entries == 2


def test_nothing_new_keeps_nothing_for_an_unknown_log() -> None:
    cache = PrefixCache()
    assert cache.extend("pp:a", 0, []) == []
    assert cache.have("pp:a") == 0 and cache.entries == 0


def test_trim_drops_least_recently_used_logs_down_to_the_bound() -> None:
    cache = PrefixCache(max_entries=5)
    cache.extend("pp:old", 0, [1, 2, 3])
    cache.extend("pp:new", 0, [1, 2])
    cache.extend("pp:old", 3, [])  # read again: now the most recent
    cache.extend("mv:m", 0, [1, 2])
    assert cache.entries == 7  # no eviction inside a read
    cache.trim()
    assert cache.have("pp:new") == 0
    assert cache.have("pp:old") == 3 and cache.have("mv:m") == 2 and cache.entries == 5


def test_a_tail_past_what_is_held_is_refused() -> None:
    cache = PrefixCache()
    with pytest.raises(StoreError, match="prefix cache"):
        cache.extend("pp:a", 2, [3])


def test_zero_bound_keeps_nothing_between_reads() -> None:
    cache = PrefixCache(max_entries=0)
    cache.extend("pp:a", 0, [1])
    cache.trim()
    assert cache.have("pp:a") == 0 and cache.entries == 0
