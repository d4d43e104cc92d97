"""Topic naming: one derivation (prefix + suffix) for inputs, outputs and events."""

from __future__ import annotations

import doctest

import pytest

from escrowguard import topics
from escrowguard.events import EVENT_TYPES, INPUT_TOPIC_SUFFIXES
from escrowguard.settings import TopicSettings, load_settings

T = TopicSettings(prefix="escrow.", partitions=4, replication_factor=1)


def test_doctests() -> None:
    result = doctest.testmod(topics)
    assert result.attempted > 0
    assert result.failed == 0


def test_default_names_match_the_wire_contract() -> None:
    assert topics.all_topics(load_settings(env={}).topics) == [
        "escrow.backers",
        "escrow.projects",
        "escrow.pledges",
        "escrow.votes",
        "escrow.alerts",
        "escrow.payout-freezes",
        "escrow.milestone-decisions",
        "escrow.deadletter",
    ]


@pytest.mark.parametrize("prefix", ["escrow.", "bt.2026-01.", "t0a1b2c3d."])
def test_every_name_is_prefix_plus_suffix(prefix: str) -> None:
    t = TopicSettings(prefix=prefix, partitions=1, replication_factor=1)
    names = topics.all_topics(t)
    assert len(set(names)) == len(names) == 8
    assert all(name.startswith(prefix) for name in names)
    assert [topics.suffix_of(name, t) for name in names] == list(topics.ALL_TOPIC_SUFFIXES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_type_routes_to_an_input_topic(event_type: type) -> None:
    name = topics.topic_for_event(event_type, T)
    assert name in topics.input_topics(T)
    assert topics.suffix_of(name, T) in INPUT_TOPIC_SUFFIXES


def test_every_input_topic_receives_some_event_type() -> None:
    used = {topics.topic_for_event(t, T) for t in EVENT_TYPES}
    assert used == set(topics.input_topics(T))


def test_inputs_and_outputs_do_not_overlap() -> None:
    assert not set(topics.input_topics(T)) & set(topics.output_topics(T))


def test_output_topic_knows_only_output_suffixes() -> None:
    assert topics.output_topic(T, "alerts") == "escrow.alerts"
    with pytest.raises(ValueError, match="pledges"):
        topics.output_topic(T, "pledges")


def test_suffix_of_rejects_foreign_names() -> None:
    assert topics.suffix_of("other.alerts", T) is None
    assert topics.suffix_of("escrow.unknown", T) is None
