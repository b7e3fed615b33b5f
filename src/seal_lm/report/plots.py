"""The report's plots: matplotlib figures saved as PNG files next to the page and embedded in it.

Figures are made without pyplot (no global state, no GUI backend).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

from seal_lm.report.page import esc
from seal_lm.stats import Estimate

FIGSIZE = (7.0, 3.5)
DPI = 110
BLUE, ORANGE, GREEN, RED, GREY = "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#999999"


class Plots:
    """Saves each figure as `<name>.png` in the report directory and returns its <img> tag (a data URI)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: list[Path] = []

    @staticmethod
    def figure(nrows: int = 1, ncols: int = 1, height: float | None = None, **kwargs):
        from matplotlib.figure import Figure  # imported here: `seal` starts faster without it

        fig = Figure(figsize=(FIGSIZE[0], height or FIGSIZE[1] * nrows), dpi=DPI, layout="constrained")
        return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)

    def save(self, fig, name: str, alt: str) -> str:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        fig.clear()
        data = buffer.getvalue()
        path = self.out_dir / f"{name}.png"
        path.write_bytes(data)
        self.files.append(path)
        return f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{esc(alt)}">\n'


def interval_bars(plots: Plots, name: str, labels: Sequence[str], estimates: Sequence[Estimate], xlabel: str,
                  highlight: Sequence[bool] = ()) -> str:
    """Horizontal bars with 95% intervals, one per label (e.g. accuracy per condition)."""
    fig, axes = plots.figure(height=max(1.6, min(FIGSIZE[1], 0.9 + 0.45 * len(labels))))
    ax = axes[0][0]
    ys = list(range(len(labels)))
    means = [100 * e.mean for e in estimates]
    ax.barh(ys, means, color=[ORANGE if h else BLUE for h in (highlight or [False] * len(labels))], alpha=0.35,
            height=0.6)
    ax.errorbar(means, ys, xerr=[[_below(e) for e in estimates], [_above(e) for e in estimates]], fmt="o",
                color="#222", capsize=4, markersize=5)
    ax.set_yticks(ys, [f"{label} (n={e.n})" for label, e in zip(labels, estimates)])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return plots.save(fig, name, xlabel)


def difference_bars(plots: Plots, name: str, labels: Sequence[str], means: Sequence[float], lows: Sequence[float],
                    highs: Sequence[float], xlabel: str) -> str:
    """Paired differences with their 95% intervals around a zero line; green where the interval excludes 0."""
    fig, axes = plots.figure(height=max(1.6, min(FIGSIZE[1], 0.9 + 0.45 * len(labels))))
    ax = axes[0][0]
    ys = list(range(len(labels)))
    for y, m, lo, hi in zip(ys, means, lows, highs):
        colour = GREEN if lo > 0 else RED if hi < 0 else GREY
        ax.errorbar([100 * m], [y], xerr=[[100 * max(0.0, m - lo)], [100 * max(0.0, hi - m)]], fmt="o",
                    color=colour, capsize=4, markersize=5)
    ax.axvline(0, color="#222", linewidth=0.8)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return plots.save(fig, name, xlabel)


def fraction_bars(plots: Plots, name: str, labels: Sequence[str], estimates: Sequence[Estimate],
                  counts: Sequence[tuple[int, int]], ylabel: str) -> str:
    """Vertical bars of fractions with 95% intervals and "k of n" above each."""
    fig, axes = plots.figure()
    ax = axes[0][0]
    xs = list(range(len(labels)))
    means = [100 * e.mean for e in estimates]
    ax.bar(xs, means, color=GREEN, alpha=0.7, width=0.6)
    ax.errorbar(xs, means, yerr=[[_below(e) for e in estimates], [_above(e) for e in estimates]], fmt="none",
                ecolor="#222", capsize=5)
    for x, e, (k, n) in zip(xs, estimates, counts):
        ax.text(x, min(100 * e.high + 3, 103), f"{k} of {n}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs, labels)
    ax.set_ylim(0, 112)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return plots.save(fig, name, ylabel)


def paired_boxes(plots: Plots, name: str, labels: Sequence[str], first: Sequence[Sequence[float]],
                 second: Sequence[Sequence[float]], names: tuple[str, str], ylabel: str) -> str:
    """Two box plots per label, side by side (e.g. rewards and baselines per round)."""
    fig, axes = plots.figure()
    ax = axes[0][0]
    width, handles = 0.35, []
    for offset, data, colour, legend in ((-width / 2 - 0.02, first, BLUE, names[0]),
                                         (width / 2 + 0.02, second, GREY, names[1])):
        positions = [i + offset for i, d in enumerate(data) if d]
        values = [d for d in data if d]
        if not values:
            continue
        box = ax.boxplot(values, positions=positions, widths=width, patch_artist=True, showmeans=True,
                         manage_ticks=False, meanprops={"marker": "D", "markerfacecolor": "white",
                                                        "markeredgecolor": "#222", "markersize": 4})
        for patch in box["boxes"]:
            patch.set_facecolor(colour)
            patch.set_alpha(0.5)
        handles.append((box["boxes"][0], legend))
    ax.set_xticks(range(len(labels)), [f"{label}\n(n={len(a)} / {len(b)})" for label, a, b in zip(labels, first, second)])
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(axis="y", alpha=0.3)
    if handles:
        ax.legend([h for h, _ in handles], [n for _, n in handles], loc="upper right", fontsize=8)
    return plots.save(fig, name, ylabel)


def gain_bars(plots: Plots, name: str, panels: dict[str, list[tuple[str, float, float]]], ylabel: str) -> str:
    """One panel per key: bars of each entry's best gain (sorted), dots of its mean gain."""
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plots.figure(nrows, ncols, sharey=True)
    for i, (title, entries) in enumerate(panels.items()):
        ax = axes[i // ncols][i % ncols]
        xs = list(range(len(entries)))
        best = [e[1] for e in entries]
        ax.bar(xs, best, color=[GREEN if g > 0 else RED for g in best], alpha=0.7, width=0.8, label="best gain")
        ax.plot(xs, [e[2] for e in entries], "o", color="#222", markersize=3.5, label="mean gain")
        ax.axhline(0, color="#222", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        if len(entries) <= 12:
            ax.set_xticks(xs, [e[0] for e in entries], rotation=60, fontsize=7)
        else:
            ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
        if i == 0:
            ax.legend(fontsize=7, loc="upper right")
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return plots.save(fig, name, ylabel)


def heatmaps(plots: Plots, name: str, matrices: dict[str, list[list[float | None]]], xlabel: str, ylabel: str) -> str:
    """One annotated 0-100% heatmap per key, side by side (e.g. forgetting matrices)."""
    fig, axes = plots.figure(1, len(matrices), height=FIGSIZE[1] * 1.1)
    image = None
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        values = [[float("nan") if v is None else 100 * v for v in row] for row in matrix]
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 50 else "black")
        n = len(values)
        ax.set_title(title)
        ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
        ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=list(axes[0]), label="accuracy, %", shrink=0.8)
    return plots.save(fig, name, f"{ylabel} by {xlabel}")


def before_after_bars(plots: Plots, name: str, labels: Sequence[str], before: Sequence[float], after: Sequence[float],
                      ylabel: str) -> str:
    fig, axes = plots.figure()
    ax = axes[0][0]
    xs = range(len(labels))
    for offset, values, colour, legend in ((-0.2, before, GREY, "before"), (0.2, after, BLUE, "after")):
        ax.bar([x + offset for x in xs], [100 * v for v in values], width=0.4, color=colour, label=legend)
    ax.set_xticks(list(xs), [label[:18] for label in labels], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend()
    return plots.save(fig, name, ylabel)


def _below(e: Estimate) -> float:
    """Error-bar length in percentage points; interval bounds can sit a rounding error past the mean."""
    return max(0.0, 100 * (e.mean - e.low))


def _above(e: Estimate) -> float:
    return max(0.0, 100 * (e.high - e.mean))
