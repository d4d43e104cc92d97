"""The model report's figures, drawn from a bundle's metrics alone (PNG, Agg canvas).

Figures are built as ``matplotlib.figure.Figure`` objects and saved through the Agg canvas:
no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from escrowguard.models.bandit import POLICIES

DPI: Final = 110
COLORS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")
SEGMENT_COLORS: Final = {"Casuals": "#9ecae1", "Regulars": "#3182bd", "Whales": "#d62728"}


def _figure(width: float = 6.4, height: float = 4.4, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def roc_curves(metrics: Mapping[str, Any]) -> Figure:
    """ROC of the success and risk models on their random test splits."""
    fig, (ax,) = _figure(5.6, 5.0)
    for color, (name, label) in zip(
        COLORS, (("success", "project success"), ("risk", "milestone risk")), strict=False
    ):
        roc = metrics[name]["roc"]
        auc = metrics[name]["split"]["roc_auc"]
        if roc["fpr"]:
            ax.plot(roc["fpr"], roc["tpr"], color=color, lw=2, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title("ROC curves (held-out split)")
    ax.legend(loc="lower right")
    return fig


def importances(metrics: Mapping[str, Any], top: int = 10) -> Figure:
    """Top feature importances of the success forest and the risk boosting model."""
    fig, axes = _figure(11.0, 4.6, ncols=2)
    for ax, color, (name, title) in zip(
        axes,
        COLORS,
        (("success", "project success (RF)"), ("risk", "milestone risk (GB)")),
        strict=False,
    ):
        pairs = metrics[name]["top_features"][:top][::-1]
        ax.barh([p[0] for p in pairs], [p[1] for p in pairs], color=color)
        ax.set_title(title)
        ax.set_xlabel("importance (impurity decrease)")
    return fig


def risk_by_window(metrics: Mapping[str, Any]) -> Figure:
    """Risk AUC and F1 by the share of the voting window elapsed when scored."""
    fig, (ax,) = _figure(6.4, 4.2)
    rows = metrics["risk"]["by_window_fraction"]
    x = list(range(len(rows)))
    auc = [r["roc_auc"] or 0.0 for r in rows]
    f1 = [r["f1"] or 0.0 for r in rows]
    ax.bar([i - 0.2 for i in x], auc, width=0.4, color=COLORS[0], label="ROC-AUC")
    ax.bar([i + 0.2 for i in x], f1, width=0.4, color=COLORS[3], label="F1")
    ax.set_xticks(x, [f"{r['bucket']}\n{r['n']} rows" for r in rows])
    ax.set(xlabel="fraction of the voting window elapsed", ylim=(0, 1.18))
    ax.axhline(0.9, color="grey", ls="--", lw=1, label="AUC target 0.90")
    ax.set_title("How early milestone risk can warn (held-out milestones)")
    ax.legend(loc="upper center", ncol=3)
    return fig


def pareto(metrics: Mapping[str, Any]) -> Figure:
    """Concentration curves of pledged money over projects and backers."""
    fig, (ax,) = _figure(5.6, 5.0)
    p = metrics["pareto"]
    for color, key, share, label in (
        (COLORS[0], "projects_curve", "top20_projects_share", "projects"),
        (COLORS[1], "backers_curve", "top20_backers_share", "backers"),
    ):
        ax.plot(
            p[key]["x"],
            p[key]["y"],
            color=color,
            lw=2,
            label=f"{label}: top 20% hold {p[share]:.0%}",
        )
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="equal shares")
    ax.axvline(0.2, color="grey", ls=":", lw=1)
    ax.set(xlabel="top share of holders", ylabel="share of pledged money", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Pareto: who holds the pledged money")
    ax.legend(loc="lower right")
    return fig


def segments(metrics: Mapping[str, Any]) -> Figure:
    """Backers (a seeded sample) by pledge count and total spend, coloured by segment."""
    fig, (ax,) = _figure(6.4, 4.6)
    s = metrics["segments"]["scatter"]
    sizes = metrics["segments"]["sizes"]
    for name, color in SEGMENT_COLORS.items():
        idx = [i for i, seg in enumerate(s["segment"]) if seg == name]
        ax.scatter(
            [s["pledge_count"][i] for i in idx],
            [s["total_dollars"][i] for i in idx],
            s=14,
            alpha=0.7,
            color=color,
            label=f"{name} ({sizes.get(name, 0)} backers)",
        )
    ax.set_yscale("log")
    ax.set(xlabel="pledges", ylabel="total pledged ($, log scale)")
    ax.set_title(f"Backer segments (silhouette {metrics['segments']['silhouette']:.3f})")
    ax.legend(loc="lower right")
    return fig


def bandit_regret(metrics: Mapping[str, Any]) -> Figure:
    """Cumulative expected regret of Thompson sampling vs uniform and greedy choice."""
    fig, (ax,) = _figure(6.4, 4.4)
    b = metrics["bandit"]
    order = [p for p in POLICIES if p in b["curves"]]
    for color, policy in zip(COLORS, order, strict=False):
        curve = b["curves"][policy]
        final = b["final_regret"][policy]
        ax.plot(curve["x"], curve["y"], color=color, lw=2, label=f"{policy} ({final:.0f})")
    rates = ", ".join(f"{a} {r:.2f}" for a, r in b["true_rates"].items())
    ax.set(xlabel="milestone decisions", ylabel="cumulative expected regret")
    ax.set_title(f"Release bandit regret\nsimulated approval rates: {rates}", fontsize=10)
    ax.legend(loc="upper left")
    return fig


def anomaly_budgets(metrics: Mapping[str, Any]) -> Figure:
    """Pledge-anomaly precision and recall against the alert budget (needs labels)."""
    fig, (ax,) = _figure(6.4, 4.2)
    a = metrics["anomaly"]
    rows = a["budgets"]
    budgets = [r["budget"] * 100 for r in rows]
    ax.plot(budgets, [r["precision"] for r in rows], "o-", color=COLORS[0], label="precision")
    ax.plot(budgets, [r["recall"] for r in rows], "o-", color=COLORS[1], label="recall")
    ax.axvline(a["alert_budget"] * 100, color="grey", ls="--", lw=1, label="chosen budget")
    ax.set(xlabel="alert budget (% of pledges flagged)", ylim=(0, 1.05))
    ax.set_title("Pledge anomaly: precision / recall by alert budget")
    ax.legend(loc="lower right")
    return fig


#: File name -> figure builder, in report order.
FIGURES: Final[dict[str, Callable[[Mapping[str, Any]], Figure]]] = {
    "roc.png": roc_curves,
    "importances.png": importances,
    "risk_by_window.png": risk_by_window,
    "anomaly_budgets.png": anomaly_budgets,
    "segments.png": segments,
    "pareto.png": pareto,
    "bandit_regret.png": bandit_regret,
}


def write_figures(metrics: Mapping[str, Any], out_dir: Path) -> list[str]:
    """Draw every figure the metrics support into ``out_dir``; returns the file names."""
    written = []
    for name, build in FIGURES.items():
        if name == "anomaly_budgets.png" and "budgets" not in metrics["anomaly"]:
            continue  # no labels: nothing to plot
        fig = build(metrics)
        fig.savefig(out_dir / name)
        written.append(name)
    return written
