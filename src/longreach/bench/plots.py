"""The report's figures (matplotlib, Agg backend): the NIAH heatmap and accuracy-versus-cost plots."""

from __future__ import annotations

from pathlib import Path

from ..errors import LongreachError

NIAH_COLORS = ["#F0496E", "#EBB839", "#0CD79F"]  # red -> yellow -> green, as gkamradt's notebook


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise LongreachError("the report's plots need matplotlib: pip install 'longreach[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def length_label(length: int) -> str:
    """4096 -> '4K', 1536 -> '1.5K', 1000 -> '1000'."""
    if length % 1024 == 0:
        return f"{length // 1024}K"
    return f"{length / 1024:.1f}K" if length % 512 == 0 else str(length)


def heatmap(scores: dict[tuple[int, float], float], title: str, path: Path) -> Path:
    """Mean score (0..1) per (length, depth): rows are depths in %, columns lengths.

    Args:
        scores: (length, depth fraction) -> mean score.
        title: figure title (task, method).
        path: PNG to write.
    """
    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    lengths = sorted({length for length, _ in scores})
    depths = sorted({depth for _, depth in scores})
    grid = [[scores.get((length, depth), float("nan")) for length in lengths] for depth in depths]
    cmap = LinearSegmentedColormap.from_list("niah", NIAH_COLORS).with_extremes(bad="#dddddd")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(lengths) + 2.5), max(3.0, 0.4 * len(depths) + 1.5)))
    image = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [length_label(n) for n in lengths],
                  rotation=45 if len(lengths) > 8 else 0)
    ax.set_yticks(range(len(depths)), [f"{100 * d:g}" for d in depths])
    for row, line in enumerate(grid):
        for col, value in enumerate(line):
            if value == value:  # not NaN
                ax.text(col, row, f"{value:.2f}".lstrip("0") if value < 1 else "1", ha="center", va="center",
                        fontsize=7, color="black")
    ax.set_xlabel("Token Limit")
    ax.set_ylabel("Depth Percent")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tradeoff(points: dict[str, list[tuple[float, float, int]]], xlabel: str, title: str, path: Path,
             log_x: bool = False) -> Path:
    """Accuracy (%) against a cost per method: one line per method, one point per length.

    Args:
        points: method -> [(x, accuracy %, length)].
        xlabel: what x measures (KV memory, prefill speed, ...).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for method, series in sorted(points.items()):
        series = sorted(series, key=lambda p: p[2])
        xs, ys = [p[0] for p in series], [p[1] for p in series]
        ax.plot(xs, ys, marker="o", label=method)
        for x, y, length in series:
            ax.annotate(length_label(length), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
