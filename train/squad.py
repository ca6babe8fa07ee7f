"""SQuAD v1.1 evaluation: predicted spans decoded back into text of the original contexts, and the official exact
match and F1.

What an eval needs to give, per row (one row per window of a context, `train.data.SpanQARecipe`):
  outputs["start_logits"], outputs["end_logits"]: [rows, length] float, the question_answering head's outputs.
  batch["example_index"]: [rows] int, which example (record of the eval set) the window belongs to.
  batch["token_char_start"], batch["token_char_end"]: [rows, length] int, the characters [start, end) of the
    example's context each token came from; -1 for the question, the special tokens and padding.
and, once, the eval examples themselves: `contexts[i]` (the original context string of example i) and
`references[i]` (its ground-truth answer strings).

    metric = squad_metric(contexts, references)      # for the eval plumbing: (outputs, batch) -> floats
    metric(outputs, batch)                           # {"exact_match": 81.2, "f1": 88.5}, as the official script
    metric = squad_metric_from_config(config)        # the same, for a recipe's tfds eval split

or in two steps, `decode_answers(...)` -> {example_index: answer} and `squad_scores(predictions, references)`.
Rows may come in any order and an example's windows need not be adjacent; the scores average over the examples the
rows cover (an eval of the first N batches scores those examples, not the whole split). Every row must be a real
window: rows an eval adds to fill a batch must be dropped before (they would answer for example_index 0).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Callable, Mapping, Sequence, Union

import numpy as np

Examples = Union[Sequence, Mapping]  # indexed by example index: contexts[i] -> str, references[i] -> [str]
PUNCTUATION = frozenset(string.punctuation)


# -- the official evaluation (evaluate-v1.1.py) ------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles (a, an, the) removed, whitespace collapsed: the official order."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1(prediction: str, ground_truth: str) -> float:
    """The F1 of the two normalized answers' words (a bag of words: repeated words count as often as they agree)."""
    predicted, true = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping, references: Mapping) -> dict[str, float]:
    """{"exact_match", "f1"}: each question's best score over its ground truths, averaged over `references`, x100.

    A question of `references` without a prediction scores 0, as in the official script.
    """
    if not references:
        raise ValueError("squad_scores: no references to score against")
    totals = {"exact_match": 0.0, "f1": 0.0}
    for key, ground_truths in references.items():
        if not ground_truths:
            raise ValueError(f"example {key!r} has no ground-truth answer")
        prediction = predictions.get(key)
        if prediction is None:
            continue
        totals["exact_match"] += max(exact_match(prediction, truth) for truth in ground_truths)
        totals["f1"] += max(f1(prediction, truth) for truth in ground_truths)
    return {name: 100.0 * total / len(references) for name, total in totals.items()}


# -- post-processing: predicted positions -> answer text --------------------------------------------------------
def decode_answers(start_logits: np.ndarray, end_logits: np.ndarray, rows: Mapping[str, np.ndarray],
                   contexts: Examples, *, max_answer_length: int = 30, n_best: int = 20) -> dict[int, str]:
    """The best answer of each example over all its windows, as the SQuAD v1.1 papers' scripts pick it.

    In each window, the pairs of the `n_best` highest start and `n_best` highest end logits with start <= end,
    end - start < max_answer_length and both tokens in the window's context are candidates, scored by
    start + end logit; the example's answer is its best candidate's text: the original context from the start token's
    first character to the end token's last (casing, punctuation and spacing as written). An example without a
    candidate answers "".

    Args:
      start_logits, end_logits: [rows, length].
      rows: "example_index" [rows], "token_char_start" and "token_char_end" [rows, length] (see the module doc).
      contexts: contexts[example_index] -> the original context string.
    Returns:
      {example_index: answer text} for every example the rows cover.
    """
    start_logits, end_logits = np.asarray(start_logits, np.float32), np.asarray(end_logits, np.float32)
    example_index = np.asarray(rows["example_index"])
    char_start, char_end = np.asarray(rows["token_char_start"]), np.asarray(rows["token_char_end"])
    if not start_logits.shape == end_logits.shape == char_start.shape == char_end.shape:
        raise ValueError(f"start_logits {start_logits.shape}, end_logits {end_logits.shape}, token_char_start "
                         f"{char_start.shape} and token_char_end {char_end.shape} must all be [rows, length]")
    if example_index.shape != start_logits.shape[:1]:
        raise ValueError(f"example_index {example_index.shape} must be [rows] of logits {start_logits.shape}")
    best: dict[int, tuple[float, int, int]] = {}  # example -> (score, first character, end character)
    for row in range(len(example_index)):
        example = int(example_index[row])
        best.setdefault(example, (-np.inf, 0, 0))
        starts = np.argsort(-start_logits[row], kind="stable")[:n_best]  # [n_best]
        ends = np.argsort(-end_logits[row], kind="stable")[:n_best]
        scores = start_logits[row, starts][:, None] + end_logits[row, ends][None, :]  # [n_best start, n_best end]
        allowed = ((char_start[row, starts] >= 0)[:, None] & (char_start[row, ends] >= 0)[None, :]
                   & (starts[:, None] <= ends[None, :]) & (ends[None, :] < starts[:, None] + max_answer_length))
        if not allowed.any():
            continue
        pick = np.unravel_index(np.argmax(np.where(allowed, scores, -np.inf)), scores.shape)
        if scores[pick] > best[example][0]:
            best[example] = (float(scores[pick]), int(char_start[row, starts[pick[0]]]),
                             int(char_end[row, ends[pick[1]]]))
    return {example: contexts[example][first:last] for example, (_, first, last) in best.items()}


def squad_metric(contexts: Examples, references: Examples, *, max_answer_length: int = 30,
                 n_best: int = 20) -> Callable[[Mapping, Mapping], dict[str, float]]:
    """A metric for the eval: (gathered outputs, gathered batch) -> {"exact_match", "f1"} over the examples the eval
    rows cover. `contexts[i]`, `references[i]`: example i's context and its ground-truth answers."""

    def metric(outputs: Mapping, batch: Mapping) -> dict[str, float]:
        predictions = decode_answers(outputs["start_logits"], outputs["end_logits"], batch, contexts,
                                     max_answer_length=max_answer_length, n_best=n_best)
        return squad_scores(predictions, {example: list(references[example]) for example in predictions})

    return metric


def squad_metric_from_config(config) -> Callable[[Mapping, Mapping], dict[str, float]]:
    """`squad_metric` for a question_answering recipe: against the contexts and all reference answers of its
    `data.eval_split` (`train.inputs.squad_records`), the split its eval rows come from."""
    from train import inputs

    if not config.data.eval_split:
        raise ValueError("squad_metric_from_config: the recipe has no data.eval_split to score against")
    records = inputs.squad_records(config.data, config.data.eval_split)
    return squad_metric(records.contexts, records.references)


__all__ = ["decode_answers", "exact_match", "f1", "normalize_answer", "squad_metric", "squad_metric_from_config",
           "squad_scores"]
