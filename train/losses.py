"""Losses and metrics of every task, in float32, weighted by real (non-ignored) tokens.

Labels < 0 (the public checkpoints' -100) are ignored. Each loss returns (mean loss, metrics) where the metrics are
sums (`loss_sum`, `correct`, `weight`) so they add up across steps and hosts before dividing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IGNORE = -100


def cross_entropy(logits, labels, weights=None, label_smoothing: float = 0.0):
    """Summed softmax cross-entropy over positions where labels >= 0 (times `weights`), with label smoothing.

    Smoothing puts 1 - a on the label and a / V on every class (optax.smooth_labels, PyTorch's label_smoothing):
    loss = (1 - a) * -log p[label] + a * mean_v(-log p[v]).
    Returns (loss_sum, correct_sum, weight_sum), all float32 scalars.
    """
    logits = logits.astype(jnp.float32)
    valid = (labels >= 0).astype(jnp.float32)
    if weights is not None:
        valid = valid * weights.astype(jnp.float32)
    safe_labels = jnp.where(labels >= 0, labels, 0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(log_probs, axis=-1)
    correct = (top_class(logits) == safe_labels).astype(jnp.float32)
    return jnp.sum(nll * valid), jnp.sum(correct * valid), jnp.sum(valid)


def top_class(logits):
    """[...] int32: jnp.argmax(logits, axis=-1) (the first class at the top) for logits [..., classes] without NaNs,
    made of two plain reductions, a max (the log-softmax's own) and a min: XLA:CPU's argmax, a reduction of (value,
    index) pairs, took 2.9 ms of the demo's 165 ms step over 1,024 classes."""
    classes = logits.shape[-1]
    at_top = logits == jnp.max(logits, axis=-1, keepdims=True)
    return jnp.min(jnp.where(at_top, jnp.arange(classes, dtype=jnp.int32), classes), axis=-1)


def chunked_cross_entropy(projection, hidden, labels, label_smoothing: float = 0.0):
    """`cross_entropy` of the logits `projection(hidden)` (a zoo.heads.VocabProjection), made `projection.chunk`
    positions of every row at a time and remade in the backward pass: at no point are the [batch, length, vocab]
    logits, or their gradient, held in memory, only one chunk's [batch, chunk, vocab]. Equal to the unchunked loss
    to float32 rounding (the sums add chunk by chunk). hidden [batch, length, embed], labels [batch, length]."""
    batch, length, embed = hidden.shape
    chunk = projection.chunk
    padding = -length % chunk  # ignored positions to fill the last chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, padding), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, padding)), constant_values=IGNORE)
    chunks = (length + padding) // chunk
    # chunks first, batch kept whole in each: a data-sharded batch stays sharded chunk by chunk
    hidden = jnp.moveaxis(hidden.reshape(batch, chunks, chunk, embed), 1, 0)
    labels = jnp.moveaxis(labels.reshape(batch, chunks, chunk), 1, 0)

    @jax.checkpoint  # the backward pass remakes each chunk's logits instead of keeping them from the forward
    def add_chunk(sums, chunk_inputs):
        h, y = chunk_inputs
        return jax.tree.map(jnp.add, sums, cross_entropy(projection(h), y, label_smoothing=label_smoothing)), None

    zero = jnp.zeros((), jnp.float32)
    sums, _ = jax.lax.scan(add_chunk, (zero, zero, zero), (hidden, labels))
    return sums


def vocab_cross_entropy(outputs, labels, label_smoothing: float = 0.0):
    """`cross_entropy` of an LM head's output: its logits, or, from a model called with `logits_chunk`, its
    `vocab_projection` of the last hidden states chunk by chunk (`chunked_cross_entropy`)."""
    if outputs.vocab_projection is not None:
        return chunked_cross_entropy(outputs.vocab_projection, outputs.last_hidden_state, labels, label_smoothing)
    return cross_entropy(outputs.logits, labels, label_smoothing=label_smoothing)


# Equal-width bins of the top class's probability for the expected calibration error (Guo et al. 2017; Mueller et al.
# 2019 measure label smoothing's effect on it with 15).
CALIBRATION_BINS = 15


def calibration_sums(logits, labels) -> dict:
    """Per confidence bin, over positions where labels >= 0: the summed confidence (the top class's probability) and
    the number of those positions whose top class is the label ([CALIBRATION_BINS] float32 each). Sums, so they add
    across steps, batches and hosts; `summarize` turns them into the expected calibration error,
    ECE = sum over bins of |correct_b - confidence_b| / positions."""
    # the same log-softmax and top class as `cross_entropy`'s, which XLA computes once for both: the top probability is
    # exp of the top log-probability, so no second pass over the vocabulary
    logits = logits.astype(jnp.float32)  # as in cross_entropy, so that both take the max of the same array
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    confidence = jnp.exp(jnp.max(log_probs, axis=-1))
    correct = (top_class(logits) == labels).astype(jnp.float32)
    valid = (labels >= 0).astype(jnp.float32)
    # a confidence of exactly 1 belongs to the last bin
    bins = jnp.minimum((confidence * CALIBRATION_BINS).astype(jnp.int32), CALIBRATION_BINS - 1)
    one_hot = jax.nn.one_hot(bins, CALIBRATION_BINS, dtype=jnp.float32) * valid[..., None]
    return {"calibration_confidence": jnp.einsum("...b,...->b", one_hot, confidence),
            "calibration_correct": jnp.einsum("...b,...->b", one_hot, correct)}


def _metrics(prefix: str, loss_sum, correct, weight) -> dict:
    return {f"{prefix}loss_sum": loss_sum, f"{prefix}correct": correct, f"{prefix}weight": weight}


def _mean(loss_sum, weight):
    return loss_sum / jnp.maximum(weight, 1.0)


def _shift_left(x, fill):
    return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], fill)], axis=1)


def next_token_targets(batch):
    """Causal LM targets from the inputs: token t predicts t+1 within the same document and real tokens only."""
    labels = _shift_left(batch["input_ids"], IGNORE)
    if "attention_mask" in batch:
        real = batch["attention_mask"] != 0
        labels = jnp.where(real & _shift_left(real, False), labels, IGNORE)
    if "segment_ids" in batch:
        labels = jnp.where(_shift_left(batch["segment_ids"], -1) == batch["segment_ids"], labels, IGNORE)
    return labels


# The loss of each task: (model outputs, the batch's keys the task declares, label smoothing) -> (mean loss, metric
# sums). The task records (train/tasks.py) name them.

def _masked_lm(logits, batch, label_smoothing: float):
    labels = batch["mlm_labels"]
    if "mlm_positions" in batch:  # logits only at these positions (see with_mlm_positions)
        labels = jnp.take_along_axis(labels, batch["mlm_positions"], axis=1)
    return cross_entropy(logits, labels, label_smoothing=label_smoothing)


def masked_lm_loss(outputs, batch, label_smoothing: float = 0.0):
    """BERT's masked LM on `mlm_labels` (-100 where nothing is masked)."""
    mlm = _masked_lm(outputs.logits, batch, label_smoothing)
    return _mean(mlm[0], mlm[2]), _metrics("mlm_", *mlm)


def pretraining_loss(outputs, batch, label_smoothing: float = 0.0):
    """Masked LM plus the sentence-pair task (BERT's next sentence, ALBERT's sentence order): the two means added."""
    mlm = _masked_lm(outputs.prediction_logits, batch, label_smoothing)
    sentence = cross_entropy(outputs.seq_relationship_logits, batch["next_sentence_labels"])
    return (_mean(mlm[0], mlm[2]) + _mean(sentence[0], sentence[2]),
            {**_metrics("mlm_", *mlm), **_metrics("sentence_", *sentence)})


def causal_lm_loss(outputs, batch, label_smoothing: float = 0.0):
    """Next-token prediction: `labels` already shifted (-100 where there is no next token), or, without them, the
    targets derived from the inputs (`next_token_targets`)."""
    labels = batch["labels"] if "labels" in batch else next_token_targets(batch)
    lm = vocab_cross_entropy(outputs, labels, label_smoothing)
    return _mean(lm[0], lm[2]), _metrics("", *lm)


def label_loss(outputs, batch, label_smoothing: float = 0.0):
    """Cross-entropy of `logits` against `labels`: seq2seq targets, sequence or token classes; with the sums of the
    expected calibration error (`calibration_sums`) wherever the logits are made whole (not chunk by chunk)."""
    ce = vocab_cross_entropy(outputs, batch["labels"], label_smoothing)
    calibration = {} if outputs.vocab_projection is not None else calibration_sums(outputs.logits, batch["labels"])
    return _mean(ce[0], ce[2]), {**_metrics("", *ce), **calibration}


def sequence_classification_loss(outputs, batch, label_smoothing: float = 0.0):
    """`label_loss` over the classes, or, for a head of one output (num_labels=1: transformers' problem_type
    "regression", GLUE's STS-B), the mean squared error of that output against real-valued `labels` (a row whose
    label is IGNORE left out)."""
    if outputs.logits.shape[-1] != 1:
        if jnp.issubdtype(batch["labels"].dtype, jnp.floating):
            raise ValueError("the labels are real numbers (a regression set such as STS-B) but the head has "
                             f"{outputs.logits.shape[-1]} classes: set model_overrides.num_labels=1")
        return label_loss(outputs, batch, label_smoothing)
    labels = batch["labels"].astype(jnp.float32)
    real = (labels != IGNORE).astype(jnp.float32)  # an eval's padding rows (train.loop.pad_rows) score nothing
    errors = jnp.square(outputs.logits[..., 0].astype(jnp.float32) - labels) * real
    loss_sum, weight = jnp.sum(errors), jnp.sum(real)
    return _mean(loss_sum, weight), {"loss_sum": loss_sum, "weight": weight}


def span_loss(outputs, batch, label_smoothing: float = 0.0):
    """Span QA: the mean of the start and end position cross-entropies (no smoothing, as in BERT's SQuAD recipe)."""
    start = cross_entropy(outputs.start_logits, batch["start_positions"])
    end = cross_entropy(outputs.end_logits, batch["end_positions"])
    return (_mean(start[0], start[2]) + _mean(end[0], end[2])) / 2, {**_metrics("start_", *start),
                                                                      **_metrics("end_", *end)}


def with_mlm_positions(batch: dict, max_predictions: int) -> dict:
    """Adds `mlm_positions` [batch, max_predictions]: the masked positions first, in order (BERT's
    `masked_lm_positions`), so the MLM head and loss run on those rows only. A row with more masked tokens than
    `max_predictions` loses the extra ones: cap them in the data (`max_predictions`) to keep the loss exact."""
    not_masked = (batch["mlm_labels"] < 0).astype(jnp.int32)
    positions = jnp.argsort(not_masked, axis=1, stable=True)[:, :max_predictions]
    return {**batch, "mlm_positions": positions.astype(jnp.int32)}


# How each train-step metric adds up over the steps between two logs (the window), on the device. The sums of
# the losses above add; grad_norm adds and `summarize` divides it by the window's steps; learning_rate is the
# schedule's value at the logged step. The step's own `loss` is one step's mean: left out, as `summarize` derives the
# window's loss from the sums (weighted by tokens, not by steps).
STEP_MEAN_METRICS = ("grad_norm",)
LATEST_METRICS = ("learning_rate",)
STEP_ONLY_METRICS = ("loss",)


@jax.jit
def _add_to_window(window: dict, metrics: dict) -> dict:
    return {k: v if k in LATEST_METRICS else window[k] + v for k, v in metrics.items()}


def add_to_window(window: dict | None, metrics: dict) -> dict:
    """The window's running metrics with one more train step's: dispatched asynchronously, no host sync."""
    metrics = {k: v for k, v in metrics.items() if k not in STEP_ONLY_METRICS}
    return metrics if window is None else _add_to_window(window, metrics)


def summarize(metrics: dict, steps: int = 1) -> dict:
    """Sums to means (host side): `x_loss_sum / x_weight` -> `x_loss`, `x_correct / x_weight` -> `x_accuracy`, so
    metrics summed over several steps (or eval batches) weight each by its tokens; the STEP_MEAN_METRICS, summed over
    `steps` train steps, are divided by `steps`; the calibration sums become `ece`, the expected calibration
    error."""
    out = {}
    for key, value in metrics.items():
        if key == "calibration_confidence":
            gaps = np.abs(np.asarray(metrics["calibration_correct"]) - np.asarray(value))
            out["ece"] = float(gaps.sum()) / max(float(metrics["weight"]), 1.0)
        elif key == "calibration_correct":
            continue
        elif key.endswith("loss_sum"):
            prefix = key[: -len("loss_sum")]
            weight = max(float(metrics[f"{prefix}weight"]), 1.0)
            out[f"{prefix}loss"] = float(value) / weight
            if f"{prefix}correct" in metrics:  # a regression has no accuracy
                out[f"{prefix}accuracy"] = float(metrics[f"{prefix}correct"]) / weight
        elif key in STEP_MEAN_METRICS:
            out[key] = float(value) / steps
        elif not key.endswith(("correct", "weight")):
            out[key] = float(value)
    if "loss" not in out:  # the objective the task's loss trains: component means added, span QA's two halved
        parts = [v for k, v in out.items() if k.endswith("loss")]
        out["loss"] = sum(parts) / (2 if "start_loss" in out else 1)
    return out
