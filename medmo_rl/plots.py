"""PNG plots of a run's curves (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rolling(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing rolling mean and std (window shrinks at the start)."""
    mean = np.array([x[max(0, i - window + 1): i + 1].mean() for i in range(len(x))])
    std = np.array([x[max(0, i - window + 1): i + 1].std() for i in range(len(x))])
    return mean, std


def reward_curve(steps: Sequence[int], rewards: Sequence[float], out: str | Path, *, title: str,
                 ylabel: str = "mean reward", window: int = 5) -> Path:
    """Like the paper's Fig. 16: per-step mean (blue), ± rolling std (shaded), smoothed trend (red)."""
    plt = _plt()
    x, y = np.asarray(steps), np.asarray(rewards, dtype=float)
    mean, std = rolling(y, window)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, color="tab:blue", lw=1, label="per-step mean")
    ax.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.2, label=f"± rolling std ({window})")
    ax.plot(x, mean, color="tab:red", lw=2, label="smoothed trend")
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def line_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], out: str | Path, *, title: str,
                ylabel: str, xlabel: str = "step") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def panel_curves(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], out: str | Path, *,
                 title: str, xlabel: str = "step") -> Path:
    """One subplot per panel (its y label = the panel's name), several named lines in each."""
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, (ylabel, series) in zip(axes[:, 0], panels.items()):
        for name, (x, y) in series.items():
            ax.plot(x, y, label=name, marker=".")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
