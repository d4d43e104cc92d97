"""The model report: our metrics beside the seed report's, as a table and as report.md with
PNG figures (``plots``). Everything comes from a bundle's manifest, so any bundle, promoted
or not, can be reported on again later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from rich.table import Table

from escrowguard.errors import BundleError
from escrowguard.models import plots
from escrowguard.models.bundle import Bundle
from escrowguard.models.train import METRIC_KEYS

#: The seed report's figures (its table; approximate ones marked ~ there).
SEED_REPORT: Final = {
    "success_accuracy": 0.80,
    "success_f1": 0.83,
    "success_auc": 0.91,
    "risk_accuracy": 0.945,
    "risk_f1": 0.936,
    "risk_auc": 0.982,
    "silhouette": 0.491,
    "anomaly_share": 0.05,
    "svd_mse": 6.2e5,
}
REPORT_NAME: Final = "report.md"
#: Training phases, in the order they run (the manifest stores them sorted by name).
PHASES: Final = ("history", "success", "risk", "segments", "anomaly", "recommender", "analyses")
#: Metrics a bundle must carry to be reported on.
REPORTED_KEYS: Final = tuple(key for key in METRIC_KEYS if key != "timing_s")


def _num(value: Any, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def comparison_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, ours, seed report, how ours was measured) for the summary table."""
    s, r = metrics["success"], metrics["risk"]
    a, seg, rec = metrics["anomaly"], metrics["segments"], metrics["recommender"]
    at = a.get("at_budget")
    anomaly_note = (
        f"precision {_num(at['precision'])}, recall {_num(at['recall'])} vs labels"
        if at
        else "no labels"
    )
    cv = s.get("cv_roc_auc")
    return [
        ("success accuracy", _num(s["split"]["accuracy"]), "0.80", "stratified 80/20"),
        ("success F1", _num(s["split"]["f1"]), "0.83", "stratified 80/20"),
        (
            "success ROC-AUC",
            _num(s["split"]["roc_auc"]),
            "0.91",
            f"80/20; 5-fold CV {_num(cv['mean'])} ± {_num(cv['std'])}" if cv else "80/20",
        ),
        ("risk accuracy", _num(r["split"]["accuracy"]), "~0.945", "80/20 by milestone"),
        ("risk F1", _num(r["split"]["f1"]), "~0.936", "80/20 by milestone"),
        ("risk ROC-AUC", _num(r["split"]["roc_auc"]), "~0.982", "80/20 by milestone"),
        (
            "segments silhouette",
            _num(seg["silhouette"]),
            "0.491",
            f"log dollars; raw dollars {_num(seg['silhouette_raw_dollars'])}",
        ),
        ("anomaly alert share", f"{a['alert_budget']:.1%}", "5%", anomaly_note),
        (
            "SVD reconstruction MSE",
            f"{rec['mse_observed']:.3g}",
            "~6.2e5",
            f"$^2 on pledged cells; hit-rate@10 {_num(rec.get('hit_rate_svd'))}",
        ),
    ]


def comparison_table(metrics: Mapping[str, Any]) -> Table:
    """The summary as a rich table, for the command line."""
    table = Table(title="escrowguard models vs the seed report")
    for column in ("metric", "ours", "seed report", "measured on"):
        table.add_column(column, justify="right" if column in ("ours", "seed report") else "left")
    for row in comparison_rows(metrics):
        table.add_row(*row)
    return table


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _holdout_row(name: str, h: Mapping[str, Any]) -> tuple[Any, ...]:
    if h.get("status") != "ok":
        return (name, h.get("n_train"), h.get("n_test"), "-", "-", "-", h.get("status"))
    return (
        name,
        h["n_train"],
        h["n_test"],
        _num(h.get("accuracy")),
        _num(h.get("f1")),
        _num(h.get("roc_auc")),
        f"{h.get('positives', '-')} positives in test",
    )


def _window_table(
    split: list[Mapping[str, Any]], holdout: list[Mapping[str, Any]] | None
) -> list[str]:
    """Risk by window fraction: the random split, and the time hold-out beside it."""
    late = {b["bucket"]: b for b in holdout or []}
    rows = []
    for b in split:
        h = late.get(b["bucket"], {})
        rows.append(
            (
                b["bucket"],
                b["n"],
                b["positives"],
                _num(b["accuracy"]),
                _num(b["f1"]),
                _num(b["roc_auc"]),
                h.get("n", "-"),
                _num(h.get("f1")),
                _num(h.get("roc_auc")),
            )
        )
    header = (
        "window elapsed",
        "rows",
        "positives",
        "accuracy",
        "F1",
        "ROC-AUC",
        "hold-out rows",
        "hold-out F1",
        "hold-out ROC-AUC",
    )
    return _table(header, rows)


def render_markdown(bundle: Bundle, figures: list[str]) -> str:
    """report.md for ``bundle``: summary table, one section per model, the analyses."""
    m = bundle.manifest["metrics"]
    hist, s, r, a = m["history"], m["success"], m["risk"], m["anomaly"]
    seg, rec, par, ab, band = (
        m["segments"],
        m["recommender"],
        m["pareto"],
        m["ab_test"],
        m["bandit"],
    )
    lines = [
        f"# Model report: bundle `{bundle.version}`",
        "",
        f"Trained {bundle.manifest['created_at']} on `{hist['source']}` "
        f"(sha256 `{hist['fingerprint'][:16]}…`): {hist['events']:,} events from "
        f"{hist['start']} to {hist['end']}, {hist['rejected']} rejected by the history check. "
        f"Seed {bundle.manifest['training'].get('seed', 42)}.",
        "",
        "## Ours beside the seed report",
        "",
        *_table(("metric", "ours", "seed report", "measured on"), comparison_rows(m)),
        "",
        f"Time hold-out: every classifier is also trained on what was known before "
        f"{hist['holdout_cutoff']} and tested on the last {hist['holdout_days']} days.",
        "",
        *_table(
            ("model", "train rows", "test rows", "accuracy", "F1", "ROC-AUC", "note"),
            [
                _holdout_row("success (projects by deadline)", s["time_holdout"]),
                _holdout_row("risk (milestones by resolution)", r["time_holdout"]),
            ],
        ),
        "",
    ]
    if "roc.png" in figures:
        lines += ["![ROC curves](roc.png)", ""]
    lines += [
        "## Project success (RandomForest)",
        "",
        f"Scored at {s['checkpoint_fraction']:.0%} of the campaign; label: funded by the "
        f"deadline ({s['funded_share']:.1%} of finished projects); funding_ratio is not a "
        f"feature. Test split: {s['split']['n']} projects.",
        "",
        "Top features: " + ", ".join(f"{n} ({v:.3f})" for n, v in s["top_features"][:5]),
        "",
        "## Milestone risk (GradientBoosting)",
        "",
        f"Vote-state rows of resolved milestones; label: final approval below target "
        f"({r['below_target_share']:.1%} of resolved milestones). Test split: "
        f"{r['split']['milestones_test']} milestones, {r['split']['n']} rows.",
        "",
        *_window_table(r["by_window_fraction"], r["time_holdout"].get("by_window_fraction")),
        "",
        "![feature importances](importances.png)",
        "",
        "![risk by window](risk_by_window.png)",
        "",
        "## Pledge anomaly (IsolationForest)",
        "",
        f"Alert budget {a['alert_budget']:.1%} of pledges: threshold {a['threshold']:.4f} on "
        f"{a['score_scale']}. Precision counts a flag right when it is any injected attack "
        "pledge (pledge anomaly, wash trading, a sybil account's pledge); recall is over the "
        "pledge_anomaly labels.",
        "",
    ]
    if "budgets" in a:
        h = a["time_holdout"]
        lines += [
            *_table(
                ("budget", "threshold", "flagged", "precision", "recall"),
                [
                    (
                        f"{b['budget']:.0%}",
                        f"{b['threshold']:.4f}",
                        b["flagged"],
                        _num(b["precision"]),
                        _num(b["recall"]),
                    )
                    for b in a["budgets"]
                ],
            ),
            "",
            f"Time hold-out (fit and threshold on pledges before the cutoff, {h['n_test']} "
            f"later pledges): precision {_num(h.get('precision'))}, recall "
            f"{_num(h.get('recall'))} ({h.get('labelled', 0)} labelled anomalies).",
            "",
            "![anomaly budgets](anomaly_budgets.png)",
            "",
        ]
    else:
        lines += ["Precision / recall: no labels (the history came without labels.json).", ""]
    lines += [
        "## Backer segments (KMeans, k=3)",
        "",
        *_table(
            ("segment", "backers", "pledges", "total $", "mean pledge $", "projects", "votes"),
            [
                (
                    p["segment"],
                    p["backers"],
                    p["mean_pledge_count"],
                    p["mean_total_dollars"],
                    p["mean_pledge_dollars"],
                    p["mean_distinct_projects"],
                    p["mean_votes_cast"],
                )
                for p in seg["profiles"]
            ],
        ),
        "",
        "(means per backer)",
        "",
        "![segments](segments.png)",
        "",
        "## Recommender (TruncatedSVD)",
        "",
        f"Rank {rec['n_components']} on {rec['backers']} backers x {rec['projects']} projects. "
        f"Reconstruction MSE {rec['mse_observed']:.4g} $^2 on pledged cells "
        f"({rec['mse_full']:.4g} over all cells). Leave-one-out hit-rate@{rec['k']}: SVD "
        f"{_num(rec.get('hit_rate_svd'))}, popularity baseline "
        f"{_num(rec.get('hit_rate_popular'))}.",
        "",
        "## Platform analyses",
        "",
        f"- Pareto: the top 20% of projects hold {par['top20_projects_share']:.1%} of pledged "
        f"money, the top 20% of backers {par['top20_backers_share']:.1%}.",
        f"- Success-badge A/B test: baseline {ab['baseline']:.1%} (funded share of finished "
        f"projects), +{ab['relative_lift']:.0%} relative lift, alpha {ab['alpha']}, power "
        f"{ab['power']}: **{ab['sample_size_per_group']} projects per group**. "
        f"{ab['badge_share']:.1%} of finished projects would earn the badge (P > 0.7); "
        f"{ab['treatment_share']:.1%} hash into treatment.",
        f"- Release bandit: on a simulation of {band['horizon']} decisions with assumed arm "
        "rates "
        + ", ".join(f"{k} {v:.3f}" for k, v in band["true_rates"].items())
        + " (the history's approved share, shifted ±0.05), final regret "
        + ", ".join(f"{k} {v:.1f}" for k, v in band["final_regret"].items())
        + ".",
        f"- Dynamic goals ({m['goals']['note']}): "
        + "; ".join(
            f"reputation {g['reputation']:g}, {g['campaign_days']:g} days -> "
            + ("none" if g["goal"] is None else f"${g['goal']:,.2f}")
            for g in m["goals"]["examples"]
        )
        + ".",
        "",
        "![pareto](pareto.png)",
        "",
        "![bandit regret](bandit_regret.png)",
        "",
    ]
    timing = m.get("timing_s") or {}
    if timing:
        lines += [
            "## Training time",
            "",
            ", ".join(f"{k} {timing[k]:.2f} s" for k in PHASES if k in timing)
            + f" (total {sum(timing.values()):.1f} s).",
            "",
        ]
    return "\n".join(lines)


def write_report(bundle: Bundle, out_dir: Path) -> Path:
    """Write report.md and its figures into ``out_dir``; returns the report's path."""
    metrics = bundle.manifest["metrics"]
    missing = [k for k in REPORTED_KEYS if k not in metrics]
    if missing:
        raise BundleError(
            f"bundle {bundle.version} has no {missing} metrics: it was not written by "
            "`escrowguard train`; retrain to get a report",
            "invalid_bundle",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plots.write_figures(bundle.manifest["metrics"], out_dir)
    path = out_dir / REPORT_NAME
    path.write_text(render_markdown(bundle, figures) + "\n", encoding="utf-8")
    return path
