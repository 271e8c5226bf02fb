"""Small SVG charts for the researcher dashboard. Pure matplotlib, no Django."""

from __future__ import annotations

import io
import math


def _pyplot():
    """pyplot on the file-only backend, imported when a chart is drawn, not at start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FIGSIZE = (5.2, 3.2)


def _svg(fig) -> str:
    plt = _pyplot()
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog so it can sit inline


def midpoint_histogram(counts: list[dict], title: str) -> str:
    fig, ax = _pyplot().subplots(figsize=FIGSIZE)
    ax.bar([c["lam"] for c in counts], [c["count"] for c in counts], width=0.07, color="#2457a6")
    ax.axvline(0.5, color="#b3261e", linestyle="--", linewidth=1, label="lam = 0.5")
    ax.set_xlabel("chosen lam (weight of image 1)")
    ax.set_ylabel("judgments")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _svg(fig)


def mean_std_plot(rows: list[dict], ylabel: str, title: str, diagonal: bool = False) -> str:
    fig, ax = _pyplot().subplots(figsize=FIGSIZE)
    xs = [r["x"] for r in rows]
    ax.errorbar(
        xs,
        [r["mean"] for r in rows],
        yerr=[r["std"] for r in rows],
        marker="o",
        capsize=4,
        color="#2457a6",
    )
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="#999", linewidth=1, label="perceived = true")
        ax.legend(frameon=False)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("true lam")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _svg(fig)


MAX_BARS = 60  # stimuli drawn in the per-stimulus chart; more would not be readable


def soft_label_bars(rows: list[dict], title: str) -> str:
    """Mean soft label per stimulus (rows from reports.soft_label_summary, sorted by
    lam): stacked mass on class 1, class 2 and the other classes, with the mixup
    label's share of class 1 (lam) marked on each bar."""
    shown = rows[:MAX_BARS]
    fig, ax = _pyplot().subplots(figsize=FIGSIZE)
    xs = range(len(shown))
    one = [r["class1"] for r in shown]
    two = [r["class2"] for r in shown]
    ax.bar(xs, one, color="#2457a6", label="class 1")
    ax.bar(xs, two, bottom=one, color="#e0a030", label="class 2")
    ax.bar(
        xs,
        [r["other"] for r in shown],
        bottom=[a + b for a, b in zip(one, two, strict=True)],
        color="#bbb",
        label="other classes",
    )
    ax.scatter(
        xs,
        [r["true_lam"] for r in shown],
        marker="_",
        color="#b3261e",
        s=60,
        label="mixup: lam on class 1",
        zorder=3,
    )
    ax.set_ylim(0, 1.02)
    ax.set_xticks([])
    suffix = f" (first {MAX_BARS} of {len(rows)})" if len(rows) > MAX_BARS else ""
    ax.set_xlabel("stimulus, by true lam" + suffix)
    ax.set_ylabel("mean soft label")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="x-small", ncol=2)
    return _svg(fig)


def _by_lam_scatter(rows: list[dict], key: str, ylabel: str, title: str, ylim=None) -> str:
    fig, ax = _pyplot().subplots(figsize=FIGSIZE)
    ax.scatter(
        [r["true_lam"] for r in rows],
        [r[key] for r in rows],
        s=12,
        alpha=0.5,
        color="#2457a6",
        label="stimulus",
    )
    lams = sorted({r["true_lam"] for r in rows})
    means = [
        sum(r[key] for r in rows if r["true_lam"] == lam)
        / sum(1 for r in rows if r["true_lam"] == lam)
        for lam in lams
    ]
    ax.plot(lams, means, marker="o", color="#b3261e", label="mean per lam")
    ax.set_xlim(-0.02, 1.02)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("true lam")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    return _svg(fig)


def soft_label_entropy(rows: list[dict], title: str) -> str:
    """Entropy (bits) of each stimulus's mean soft label against its true lam."""
    return _by_lam_scatter(rows, "entropy_bits", "entropy of mean label (bits)", title)


def soft_label_agreement(rows: list[dict], title: str) -> str:
    """Agreement of each stimulus's mean soft label with its mixup label (1 - total
    variation distance) against true lam."""
    return _by_lam_scatter(
        rows, "agreement", "agreement with mixup label", title, ylim=(-0.02, 1.05)
    )


def pair_curves(rows: list[dict], title: str) -> str:
    """Small multiples, one panel per class pair (rows from reliability.curve_rows):
    the posterior mean of the psychometric curve share(lam) with its 90% credible band,
    the midpoint's posterior mean marked."""
    plt = _pyplot()
    cols = min(4, max(1, len(rows)))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(
        nrows, cols, figsize=(2.6 * cols, 2.1 * nrows + 0.4), squeeze=False, sharex=True,
        sharey=True,
    )
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        ax.fill_between(row["lams"], row["lower"], row["upper"], color="#9db7e0", label="90% band")
        ax.plot(row["lams"], row["mean"], color="#2457a6", label="posterior mean")
        ax.axhline(0.5, color="#999", linewidth=0.6)
        ax.axvline(row["midpoint"], color="#b3261e", linestyle="--", linewidth=0.8)
        ax.set_title(
            f"{row['pair']} (n={row['n']})\nmidpoint {row['midpoint']:.2f} "
            f"± {row['midpoint_sd']:.2f}",
            fontsize="x-small",
        )
        ax.tick_params(labelsize="x-small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("share of class 1", fontsize="x-small")
    axes[-1][0].set_xlabel("lam (weight of class 1)", fontsize="x-small")
    fig.suptitle(title, fontsize="small")
    return _svg(fig)
