"""Small SVG charts for the researcher dashboard, written directly from the aggregated
numbers. Pure Python, no Django and no plotting library: a chart is a few dozen SVG
elements, so drawing one costs microseconds, where matplotlib's import and drawing cost
seconds per dashboard view.

Every element is styled with presentation attributes (fill=, stroke=), never a style
attribute or a <style> block, so the charts sit inline under the staff pages' CSP.
Text is escaped. Each function returns one "<svg ...>...</svg>" string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

BLUE = "#2457a6"
RED = "#b3261e"
ORANGE = "#e0a030"
GREY = "#999"
LIGHT_GREY = "#bbb"
BAND = "#9db7e0"
# Colours of successive series (2AFC's one curve per class pair).
CYCLE = ["#2457a6", "#e0a030", "#2e8b57", "#b3261e", "#7b4fa0", "#8c564b", "#d62f9b", "#555"]

WIDTH, HEIGHT = 520, 320  # one chart, in px (the size the dashboard's CSS scales down)
MARGIN = (44, 16, 48, 56)  # top, right, bottom, left


def _num(value: float) -> str:
    """A coordinate with two decimals, trailing zeros dropped."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _tick_label(value: float) -> str:
    return f"{value:.10g}"


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About `count` round tick values covering [low, high] (steps of 1, 2 or 5 x 10^k)."""
    span = high - low
    if not span > 0 or not math.isfinite(span):
        return [low]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(s * power for s in (1, 2, 5, 10) if s * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [
        round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)
    ]


class Panel:
    """One set of axes at (left, top) of size (width, height) in px, mapping data
    coordinates xlim x ylim onto it; collects SVG elements."""

    def __init__(
        self,
        left: float,
        top: float,
        width: float,
        height: float,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
    ) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height
        self.xlim, self.ylim = xlim, ylim
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        low, high = self.xlim
        return self.left + (value - low) / ((high - low) or 1.0) * self.width

    def y(self, value: float) -> float:
        low, high = self.ylim
        return self.top + self.height - (value - low) / ((high - low) or 1.0) * self.height

    def add(self, element: str) -> None:
        self.parts.append(element)

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = GREY,
             width: float = 1, dash: bool = False) -> None:
        """A line between two data points."""
        dashed = ' stroke-dasharray="4 3"' if dash else ""
        self.add(
            f'<line x1="{_num(self.x(x1))}" y1="{_num(self.y(y1))}" x2="{_num(self.x(x2))}" '
            f'y2="{_num(self.y(y2))}" stroke="{color}" stroke-width="{width}"{dashed}/>'
        )

    def polyline(self, xs: Sequence[float], ys: Sequence[float], color: str = BLUE,
                 width: float = 1.5) -> None:
        pairs = zip(xs, ys, strict=True)
        points = " ".join(f"{_num(self.x(a))},{_num(self.y(b))}" for a, b in pairs)
        self.add(f'<polyline points="{points}" fill="none" stroke="{color}" '
                 f'stroke-width="{width}"/>')

    def band(self, xs: Sequence[float], lower: Sequence[float], upper: Sequence[float],
             color: str = BAND) -> None:
        """The area between two curves over the same xs."""
        upper_points = [(self.x(a), self.y(b)) for a, b in zip(xs, upper, strict=True)]
        lower_points = [(self.x(a), self.y(b)) for a, b in zip(xs, lower, strict=True)]
        points = " ".join(f"{_num(a)},{_num(b)}" for a, b in upper_points + lower_points[::-1])
        self.add(f'<polygon points="{points}" fill="{color}" stroke="none"/>')

    def dot(self, x: float, y: float, color: str = BLUE, radius: float = 3.5,
            opacity: float = 1.0) -> None:
        fade = f' fill-opacity="{opacity}"' if opacity < 1 else ""
        self.add(f'<circle cx="{_num(self.x(x))}" cy="{_num(self.y(y))}" r="{radius}" '
                 f'fill="{color}"{fade}/>')

    def bar(self, x: float, width: float, bottom: float, top: float, color: str = BLUE) -> None:
        """A bar `width` wide (data units) centred on x, from bottom to top."""
        left, right = self.x(x - width / 2), self.x(x + width / 2)
        high, low = self.y(top), self.y(bottom)
        self.add(f'<rect x="{_num(left)}" y="{_num(min(high, low))}" width="{_num(right - left)}" '
                 f'height="{_num(abs(low - high))}" fill="{color}"/>')

    def text(self, x: float, y: float, text: str, size: float = 11, anchor: str = "middle",
             rotate: bool = False, px: bool = False) -> None:
        """Text at data point (x, y), or at pixel (x, y) with `px`."""
        at_x, at_y = (x, y) if px else (self.x(x), self.y(y))
        turn = f' transform="rotate(-90 {_num(at_x)} {_num(at_y)})"' if rotate else ""
        self.add(f'<text x="{_num(at_x)}" y="{_num(at_y)}" font-size="{size}" '
                 f'font-family="sans-serif" text-anchor="{anchor}"{turn}>{escape(text)}</text>')

    def axes(self, xlabel: str = "", ylabel: str = "", title: str = "", size: float = 11,
             xticks: bool = True, yticks: bool = True) -> None:
        """Frame, ticks with their values, axis labels and a title above the frame."""
        self.add(f'<rect x="{_num(self.left)}" y="{_num(self.top)}" width="{_num(self.width)}" '
                 f'height="{_num(self.height)}" fill="none" stroke="#333" stroke-width="0.8"/>')
        bottom, left = self.top + self.height, self.left
        small = size - 1
        for tick in _ticks(*self.xlim) if xticks else []:
            at = self.x(tick)
            self.add(f'<line x1="{_num(at)}" y1="{_num(bottom)}" x2="{_num(at)}" '
                     f'y2="{_num(bottom + 4)}" stroke="#333" stroke-width="0.8"/>')
            self.text(at, bottom + 5 + small, _tick_label(tick), small, px=True)
        for tick in _ticks(*self.ylim) if yticks else []:
            at = self.y(tick)
            self.add(f'<line x1="{_num(left - 4)}" y1="{_num(at)}" x2="{_num(left)}" '
                     f'y2="{_num(at)}" stroke="#333" stroke-width="0.8"/>')
            self.text(left - 6, at + small / 3, _tick_label(tick), small, anchor="end", px=True)
        if xlabel:
            self.text(left + self.width / 2, bottom + 2 * small + 12, xlabel, size, px=True)
        if ylabel:
            at_x = left - 3.2 * small - 6
            self.text(at_x, self.top + self.height / 2, ylabel, size, rotate=True, px=True)
        if title:
            self.text(left + self.width / 2, self.top - 8, title, size + 1, px=True)

    def legend(self, entries: Sequence[tuple[str, str, str]], size: float = 10) -> None:
        """(kind, colour, label) rows at the frame's top left; kind is "dot", "line",
        "dash" or "box"."""
        for i, (kind, color, label) in enumerate(entries):
            x, y = self.left + 8, self.top + 12 + i * (size + 4)
            if kind == "dot":
                self.add(f'<circle cx="{_num(x + 6)}" cy="{_num(y - 3)}" r="3" fill="{color}"/>')
            elif kind == "box":
                self.add(f'<rect x="{_num(x)}" y="{_num(y - 8)}" width="12" height="8" '
                         f'fill="{color}"/>')
            else:
                dashed = ' stroke-dasharray="4 3"' if kind == "dash" else ""
                self.add(f'<line x1="{_num(x)}" y1="{_num(y - 3)}" x2="{_num(x + 12)}" '
                         f'y2="{_num(y - 3)}" stroke="{color}" stroke-width="1.5"{dashed}/>')
            self.text(x + 16, y, label, size, anchor="start", px=True)


def _svg(width: float, height: float, parts: Sequence[str], title: str) -> str:
    """The <svg> element around `parts`; `title` is its accessible name."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(parts) + "</svg>"
    )


def _panel(xlim: tuple[float, float], ylim: tuple[float, float]) -> Panel:
    top, right, bottom, left = MARGIN
    return Panel(left, top, WIDTH - left - right, HEIGHT - top - bottom, xlim, ylim)


def midpoint_histogram(counts: list[dict], title: str) -> str:
    """Bars of how often each lam was chosen (counts: [{lam, count}]), lam = 0.5 marked."""
    top = max([c["count"] for c in counts] + [1]) * 1.05
    panel = _panel((-0.05, 1.05), (0, top))
    for c in counts:
        panel.bar(c["lam"], 0.07, 0, c["count"])
    panel.line(0.5, 0, 0.5, top, RED, dash=True)
    panel.axes("chosen lam (weight of image 1)", "judgments", title)
    panel.legend([("dash", RED, "lam = 0.5")])
    return _svg(WIDTH, HEIGHT, panel.parts, title)


def mean_std_plot(rows: list[dict], ylabel: str, title: str, diagonal: bool = False) -> str:
    """Mean +- std per x (rows: [{x, mean, std}]), joined by a line; `diagonal` draws
    y = x for reference."""
    panel = _panel((-0.02, 1.02), (-0.02, 1.05))
    if diagonal:
        panel.line(0, 0, 1, 1, GREY, dash=True)
        panel.legend([("dash", GREY, "perceived = true")])
    for r in rows:
        if r["std"] is not None:
            low, high = r["mean"] - r["std"], r["mean"] + r["std"]
            panel.line(r["x"], low, r["x"], high, BLUE)
            for end in (low, high):
                panel.line(r["x"] - 0.012, end, r["x"] + 0.012, end, BLUE)
    panel.polyline([r["x"] for r in rows], [r["mean"] for r in rows])
    for r in rows:
        panel.dot(r["x"], r["mean"])
    panel.axes("true lam", ylabel, title)
    return _svg(WIDTH, HEIGHT, panel.parts, title)


MAX_BARS = 60  # stimuli drawn in the per-stimulus chart; more would not be readable


def soft_label_bars(rows: list[dict], title: str) -> str:
    """Mean soft label per stimulus (rows from reports.soft_label_summary, sorted by
    lam): stacked mass on class 1, class 2 and the other classes, with the mixup
    label's share of class 1 (lam) marked on each bar."""
    shown = rows[:MAX_BARS]
    panel = _panel((-0.6, max(len(shown), 1) - 0.4), (0, 1.02))
    for i, r in enumerate(shown):
        one, two = r["class1"], r["class2"]
        panel.bar(i, 0.8, 0, one, BLUE)
        panel.bar(i, 0.8, one, one + two, ORANGE)
        panel.bar(i, 0.8, one + two, one + two + r["other"], LIGHT_GREY)
        panel.line(i - 0.4, r["true_lam"], i + 0.4, r["true_lam"], RED, width=2)
    suffix = f" (first {MAX_BARS} of {len(rows)})" if len(rows) > MAX_BARS else ""
    panel.axes("stimulus, by true lam" + suffix, "mean soft label", title, xticks=False)
    panel.legend(
        [("box", BLUE, "class 1"), ("box", ORANGE, "class 2"),
         ("box", LIGHT_GREY, "other classes"), ("line", RED, "mixup: lam on class 1")]
    )  # fmt: skip
    return _svg(WIDTH, HEIGHT, panel.parts, title)


def _by_lam_scatter(rows: list[dict], key: str, ylabel: str, title: str, ylim=None) -> str:
    """One dot per stimulus (true lam, rows' `key`) and the mean per true lam."""
    values = [r[key] for r in rows]
    if ylim is None:
        low, high = min(values + [0.0]), max(values + [1.0])
        ylim = (low - 0.05 * (high - low), high + 0.05 * (high - low))
    panel = _panel((-0.02, 1.02), ylim)
    for r in rows:
        panel.dot(r["true_lam"], r[key], radius=2.5, opacity=0.5)
    by_lam: dict[float, list[float]] = {}
    for r in rows:
        by_lam.setdefault(r["true_lam"], []).append(r[key])
    lams = sorted(by_lam)
    means = [sum(by_lam[lam]) / len(by_lam[lam]) for lam in lams]
    panel.polyline(lams, means, RED)
    for lam, mean in zip(lams, means, strict=True):
        panel.dot(lam, mean, RED)
    panel.axes("true lam", ylabel, title)
    panel.legend([("dot", BLUE, "stimulus"), ("line", RED, "mean per lam")])
    return _svg(WIDTH, HEIGHT, panel.parts, title)


def soft_label_entropy(rows: list[dict], title: str) -> str:
    """Entropy (bits) of each stimulus's mean soft label against its true lam."""
    return _by_lam_scatter(rows, "entropy_bits", "entropy of mean label (bits)", title)


def soft_label_agreement(rows: list[dict], title: str) -> str:
    """Agreement of each stimulus's mean soft label with its mixup label (1 - total
    variation distance) against true lam."""
    return _by_lam_scatter(
        rows, "agreement", "agreement with mixup label", title, ylim=(-0.02, 1.05)
    )


def psychometric_points(curves: list[dict], title: str) -> str:
    """2AFC: per class pair (curves from interfaces.afc.psychometric: class_a, class_b,
    points [{lam, share}], k, pse) the share answering "more of the first" at each lam
    as dots, and the fitted logistic 1 / (1 + exp(-k (lam - pse))) where there is one."""
    panel = _panel((-0.02, 1.02), (-0.02, 1.05))
    panel.line(0, 0.5, 1, 0.5, GREY, dash=True)
    legend = []
    xs = [i / 100 for i in range(101)]
    for i, curve in enumerate(curves):
        color = CYCLE[i % len(CYCLE)]
        for p in curve["points"]:
            panel.dot(p["lam"], p["share"], color)
        if curve["k"] is not None and curve["pse"] is not None:
            fitted = [_logistic(curve["k"] * (x - curve["pse"])) for x in xs]
            panel.polyline(xs, fitted, color, width=1)
        label = f"{curve['class_a']} vs {curve['class_b']}"
        if curve["pse"] is not None:
            label += f" (PSE {curve['pse']:.2f})"
        legend.append(("dot", color, label))
    panel.axes("lam of the first class (by name)", 'share answering "more of the first"', title)
    panel.legend(legend, size=9)
    return _svg(WIDTH, HEIGHT, panel.parts, title)


def _logistic(z: float) -> float:
    if z < -700:  # exp overflows; the curve is 0 there
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def pair_curves(rows: list[dict], title: str) -> str:
    """Small multiples, one panel per class pair (rows from reliability.curve_rows):
    the posterior mean of the psychometric curve share(lam) with its 90% credible band,
    the midpoint's posterior mean marked."""
    cols = min(4, max(1, len(rows)))
    nrows = max(1, math.ceil(len(rows) / cols))
    cell_w, cell_h = 200, 170
    width, height = cols * cell_w + 40, nrows * cell_h + 50
    parts = []
    for i, row in enumerate(rows):
        col, line = i % cols, i // cols
        panel = Panel(40 + col * cell_w + 16, 50 + line * cell_h + 24, cell_w - 30,
                      cell_h - 64, (0, 1), (0, 1))  # fmt: skip
        panel.band(row["lams"], row["lower"], row["upper"])
        panel.polyline(row["lams"], row["mean"], BLUE)
        panel.line(0, 0.5, 1, 0.5, GREY, width=0.6)
        panel.line(row["midpoint"], 0, row["midpoint"], 1, RED, width=0.8, dash=True)
        panel.axes(
            "lam (weight of class 1)" if line == nrows - 1 and col == 0 else "",
            "share of class 1" if col == 0 else "",
            size=9,
        )
        middle = panel.left + panel.width / 2
        panel.text(middle, panel.top - 16, f"{row['pair']} (n={row['n']})", 9, px=True)
        midpoint = f"midpoint {row['midpoint']:.2f} ± {row['midpoint_sd']:.2f}"
        panel.text(middle, panel.top - 5, midpoint, 9, px=True)
        parts += panel.parts
    heading = (
        f'<text x="{_num(width / 2)}" y="22" font-size="12" font-family="sans-serif" '
        f'text-anchor="middle">{escape(title)}</text>'
    )
    legend = Panel(width - 190, 4, 180, 40, (0, 1), (0, 1))
    legend.legend([("box", BAND, "90% band"), ("line", BLUE, "posterior mean")], size=9)
    return _svg(width, height, [heading, *parts, *legend.parts], title)
