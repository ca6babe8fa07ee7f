"""What a run leaves in its workdir (metrics.jsonl, TensorBoard events, a loss-curve PNG) and the figures that show
a run's numbers: the loss curve, and a matrix (a confusion matrix, a similarity matrix) as an annotated heat map.

Figures are built on `matplotlib.figure.Figure` without pyplot, so drawing one never switches the caller's backend
(a notebook keeps its inline plots) and never keeps a figure alive in pyplot's registry.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import jax
import numpy as np


class MetricWriter:
    """One JSON object per logged step in `metrics.jsonl` (with `step`), and the same scalars as TensorBoard events.

    Only process 0 writes; the others' writes are no-ops. `on_write(row)`, if given, is called with each row as it is
    written to metrics.jsonl (e.g. to redraw a live loss curve in a notebook).
    """

    def __init__(self, workdir: str, on_write: Callable[[dict], None] | None = None):
        self.enabled = jax.process_index() == 0
        self.on_write = on_write
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.events = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # pure-Python event files: no TensorFlow needed

            self.events = SummaryWriter(os.path.join(workdir, "events"))

    def write(self, step: int, scalars: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": step, **{prefix + k: v for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in scalars.items():
            self.events.add_scalar(prefix + k, v, step)
        self.events.flush()
        if self.on_write is not None:
            self.on_write(row)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curve_figure(rows: Sequence[dict]):
    """A figure of train loss (and eval loss, where rows have it) against step, from rows as in metrics.jsonl."""
    from matplotlib.figure import Figure

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    return fig


def plot_loss_curve(workdir: str) -> str | None:
    """Writes `loss.png` (train and eval loss against step) from metrics.jsonl; returns its path."""
    rows = read_metrics(workdir)
    if not any("loss" in r for r in rows) or jax.process_index() != 0:
        return None
    path = os.path.join(workdir, "loss.png")
    loss_curve_figure(rows).savefig(path, dpi=100, bbox_inches="tight")
    return path


def confusion_matrix(labels, predictions, num_labels: int) -> np.ndarray:
    """[num_labels, num_labels] counts: row = true label, column = predicted label.

    Raises ValueError for a label or prediction outside [0, num_labels) or arrays of different shapes.
    """
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for name, values in (("label", labels), ("prediction", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(f"a {name} is outside [0, {num_labels}): {sorted(set(values.tolist()))}")
    return np.bincount(labels * num_labels + predictions, minlength=num_labels ** 2).reshape(num_labels, num_labels)


def matrix_figure(matrix, row_labels: Sequence[str], column_labels: Sequence[str], *, title: str = "",
                  xlabel: str = "", ylabel: str = "", value_format: str = "{:.2f}"):
    """A heat map of a [rows, columns] matrix with each value written in its cell (a confusion or similarity matrix).

    Raises ValueError when the labels do not match the matrix's shape.
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    if matrix.shape != (len(row_labels), len(column_labels)):
        raise ValueError(f"matrix of shape {matrix.shape} but {len(row_labels)} row and {len(column_labels)} "
                         f"column labels")
    fig = Figure(figsize=(2.5 + 0.9 * len(column_labels), 1.5 + 0.6 * len(row_labels)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(column_labels)), column_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    middle = (matrix.max() + matrix.min()) / 2
    for (row, column), value in np.ndenumerate(matrix):  # dark text on the bright cells, light on the dark ones
        ax.text(column, row, value_format.format(value), ha="center", va="center",
                color="black" if value > middle else "white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig
