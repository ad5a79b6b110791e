"""OUT_DIR/loss.png: a run's training and dev loss against the step, drawn from its metric records."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(records: list[dict[str, Any]], png_path: str | Path, title: str = "") -> None:
    """Training loss (and dev loss, when logged) of `records` (metrics.jsonl rows) against the step, as a PNG."""
    # matplotlib is the optional [train] extra (TrainConfig.validate checks it when log.plot is on), so
    # `import auralm.train` works without it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    dev = [(r["step"], r["dev_loss"]) for r in records if "dev_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1.2)
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
