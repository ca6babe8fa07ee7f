"""What a run leaves in its workdir: metrics.jsonl, TensorBoard events, and a loss-curve PNG."""

from __future__ import annotations

import json
import os

import jax


class MetricWriter:
    """One JSON object per logged step in `metrics.jsonl` (with `step`), and the same scalars as TensorBoard events.

    Only process 0 writes; the others' writes are no-ops.
    """

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.events = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # pure-Python event files: no TensorFlow needed

            self.events = SummaryWriter(os.path.join(workdir, "events"))

    def write(self, step: int, scalars: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **{prefix + k: v for k, v in scalars.items()}}) + "\n")
        for k, v in scalars.items():
            self.events.add_scalar(prefix + k, v, step)
        self.events.flush()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss_curve(workdir: str) -> str | None:
    """Writes `loss.png` (train and eval loss against step) from metrics.jsonl; returns its path."""
    rows = read_metrics(workdir)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train or jax.process_index() != 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(workdir, "loss.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
