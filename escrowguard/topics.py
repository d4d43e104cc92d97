"""Topic names: the one place they are derived (``prefix + suffix``). Pure, no I/O.

Input suffixes come from the wire contract (``events.INPUT_TOPIC_SUFFIXES``); output suffixes
are defined here. Every component (replay, worker, infra, tests) asks this module for names.

>>> from escrowguard.settings import TopicSettings
>>> t = TopicSettings(prefix="escrow.", partitions=4, replication_factor=1)
>>> input_topics(t)
['escrow.backers', 'escrow.projects', 'escrow.pledges', 'escrow.votes']
>>> output_topics(t)[0]
'escrow.alerts'
"""

from __future__ import annotations

from typing import Final

from escrowguard.events import INPUT_TOPIC_SUFFIXES, Event
from escrowguard.settings import TopicSettings

ALERTS: Final = "alerts"
PAYOUT_FREEZES: Final = "payout-freezes"
MILESTONE_DECISIONS: Final = "milestone-decisions"
DEADLETTER: Final = "deadletter"

#: Topic suffixes of the output topics, in a stable order.
OUTPUT_TOPIC_SUFFIXES: Final[tuple[str, ...]] = (
    ALERTS,
    PAYOUT_FREEZES,
    MILESTONE_DECISIONS,
    DEADLETTER,
)
#: Every suffix escrowguard produces to or consumes from.
ALL_TOPIC_SUFFIXES: Final[tuple[str, ...]] = INPUT_TOPIC_SUFFIXES + OUTPUT_TOPIC_SUFFIXES


def input_topics(topics: TopicSettings) -> list[str]:
    """Full names of the input topics (backers, projects, pledges, votes)."""
    return [topics.name(suffix) for suffix in INPUT_TOPIC_SUFFIXES]


def output_topics(topics: TopicSettings) -> list[str]:
    """Full names of the output topics (alerts, payout-freezes, milestone-decisions, deadletter).

    >>> output_topics(TopicSettings(prefix="bt.", partitions=1, replication_factor=1))
    ['bt.alerts', 'bt.payout-freezes', 'bt.milestone-decisions', 'bt.deadletter']
    """
    return [topics.name(suffix) for suffix in OUTPUT_TOPIC_SUFFIXES]


def output_topic(topics: TopicSettings, suffix: str) -> str:
    """Full name of one output topic; ValueError for a suffix that is not an output.

    >>> output_topic(TopicSettings(prefix="escrow.", partitions=1, replication_factor=1),
    ...              PAYOUT_FREEZES)
    'escrow.payout-freezes'
    """
    if suffix not in OUTPUT_TOPIC_SUFFIXES:
        raise ValueError(f"{suffix!r} is not an output topic suffix {OUTPUT_TOPIC_SUFFIXES}")
    return topics.name(suffix)


def all_topics(topics: TopicSettings) -> list[str]:
    """Every topic escrowguard uses: inputs first, then outputs."""
    return input_topics(topics) + output_topics(topics)


def topic_for_event(event: Event | type[Event], topics: TopicSettings) -> str:
    """The input topic an event (or event type) is published to.

    >>> from escrowguard.events import VoteCast
    >>> topic_for_event(VoteCast, TopicSettings(prefix="escrow.", partitions=1,
    ...                                         replication_factor=1))
    'escrow.votes'
    """
    return topics.name(event.topic_suffix)


def suffix_of(topic: str, topics: TopicSettings) -> str | None:
    """The known suffix of a full topic name, or None when it is not one of ours.

    >>> t = TopicSettings(prefix="escrow.", partitions=1, replication_factor=1)
    >>> suffix_of("escrow.pledges", t), suffix_of("other.pledges", t)
    ('pledges', None)
    """
    if not topic.startswith(topics.prefix):
        return None
    suffix = topic[len(topics.prefix) :]
    return suffix if suffix in ALL_TOPIC_SUFFIXES else None
