"""Score the scorer: alerts and freezes against the generator's labelled attacks.

One definition, used by the demo's summary, the end-to-end tests and the training report:

- ``pledge_anomaly`` is judged per pledge: recall over the pledges labelled
  ``pledge_anomaly``; precision counts a flagged pledge as right when it is *any* injected
  attack pledge (anomaly, wash trading, or a sybil account's pledge to its target project),
  since those are abnormal too and an analyst would want to see them.
- ``wash_trading`` and ``exit_scam`` are judged per project, ``sybil_vote`` per milestone
  (the issue's "by entity"): an entity is found when at least one alert of that kind names it.
- Exit scams must also get every labelled pending milestone frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from escrowguard.outputs import Alert, PayoutFreeze

ATTACK_KINDS = ("pledge_anomaly", "wash_trading", "sybil_vote", "exit_scam")


@dataclass(frozen=True)
class KindScore:
    """Precision and recall of one alert kind against the labels."""

    kind: str
    unit: str
    labelled: int
    flagged: int
    found: int  # labelled entities that were flagged
    correct: int  # flagged entities that are attacks

    @property
    def recall(self) -> float:
        """Share of labelled entities flagged (1.0 when nothing is labelled)."""
        return self.found / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        """Share of flagged entities that are attacks (1.0 when nothing is flagged)."""
        return self.correct / self.flagged if self.flagged else 1.0


def attack_pledge_ids(
    labels: Mapping[str, Any], pledges: Iterable[tuple[str, str, str]]
) -> set[str]:
    """Event ids of every injected attack pledge; ``pledges`` = (event_id, backer, project)."""
    attacks = labels["attacks"]
    ids = {a["event_id"] for a in attacks["pledge_anomaly"]}
    ids |= {a["event_id"] for a in attacks["wash_trading"]}
    sybil = {(b, s["project_id"]) for s in attacks["sybil_vote"] for b in s["backer_ids"]}
    ids |= {eid for eid, backer, project in pledges if (backer, project) in sybil}
    return ids


def score_alerts(
    alerts: Iterable[Alert],
    labels: Mapping[str, Any],
    pledges: Iterable[tuple[str, str, str]],
) -> dict[str, KindScore]:
    """Precision/recall per attack kind (definitions in the module docstring)."""
    by_kind: dict[str, set[str]] = {kind: set() for kind in ATTACK_KINDS}
    for alert in alerts:
        kind = str(alert.kind)
        if kind == "pledge_anomaly":
            by_kind[kind].update(alert.event_ids)
        elif kind in ("wash_trading", "exit_scam") and alert.project_id:
            by_kind[kind].add(alert.project_id)
        elif kind == "sybil_vote" and alert.milestone_id:
            by_kind[kind].add(alert.milestone_id)
    attacks = labels["attacks"]
    truth = {
        "pledge_anomaly": {a["event_id"] for a in attacks["pledge_anomaly"]},
        "wash_trading": {a["project_id"] for a in attacks["wash_trading"]},
        "sybil_vote": {a["milestone_id"] for a in attacks["sybil_vote"]},
        "exit_scam": {a["project_id"] for a in attacks["exit_scam"]},
    }
    acceptable = dict(truth)
    acceptable["pledge_anomaly"] = attack_pledge_ids(labels, pledges)
    units = {
        "pledge_anomaly": "pledge",
        "wash_trading": "project",
        "sybil_vote": "milestone",
        "exit_scam": "project",
    }
    return {
        kind: KindScore(
            kind=kind,
            unit=units[kind],
            labelled=len(truth[kind]),
            flagged=len(by_kind[kind]),
            found=len(truth[kind] & by_kind[kind]),
            correct=len(by_kind[kind] & acceptable[kind]),
        )
        for kind in ATTACK_KINDS
    }


def exit_scam_freezes(
    freezes: Iterable[PayoutFreeze], labels: Mapping[str, Any]
) -> tuple[set[str], set[str]]:
    """(pending milestones of labelled exit scams, those of them that got a freeze)."""
    expected = {m for a in labels["attacks"]["exit_scam"] for m in a["milestone_ids_pending"]}
    frozen = {f.milestone_id for f in freezes if f.action == "freeze"}
    return expected, expected & frozen


def double_freezes(freezes: Iterable[PayoutFreeze]) -> dict[str, set[str]]:
    """Milestones with more than one distinct freeze id (must be empty)."""
    ids: dict[str, set[str]] = {}
    for f in freezes:
        if f.action == "freeze":
            ids.setdefault(f.milestone_id, set()).add(f.freeze_id)
    return {m: s for m, s in ids.items() if len(s) > 1}
