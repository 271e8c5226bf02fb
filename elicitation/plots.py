"""Small SVG charts for the researcher dashboard. Pure matplotlib, no Django."""

from __future__ import annotations

import io


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
