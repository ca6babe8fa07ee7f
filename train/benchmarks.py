"""Benchmark metrics: what the papers report, computed on the host from the eval outputs.

Interface (what a metric is, so other modules such as `train.squad` can add theirs): a metric is a function

    metric(outputs: dict[str, np.ndarray], batches: dict[str, np.ndarray]) -> dict[str, float]

`outputs` holds the eval step's per-example outputs concatenated over the eval batches on the host (e.g.
`predictions` [examples] for classification, [examples, length] for tagging) and `batches` the eval batches' keys
concatenated the same way (`labels` [examples] or [examples, length], with -100 at ignored positions). The returned
names are written `eval_`-prefixed to metrics.jsonl, so `checkpoint.best_metric` can name them. `METRICS` maps a
name (`config.eval.metric`, e.g. "glue/cola") to its function.

GLUE's metrics are those its paper and leaderboard report: accuracy everywhere, F1 of the positive class beside it
for MRPC and QQP, Matthews correlation for CoLA, Pearson and Spearman correlations for STS-B (whose head is a
regression, num_labels=1, trained on the squared error as transformers does). Entity F1 follows seqeval's default (CoNLL) mode on
BIO/IOB2 tags; BLEU and chrF are sacrebleu's corpus scores, the numbers translation papers compare: "translation"
scores a seq2seq task's greedy translations (decoded in the eval step with the KV cache) as text.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from train.losses import IGNORE

IGNORED = IGNORE  # label of positions the loss skips (padding, sub-word continuations, an eval's padding rows)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of non-ignored positions where predictions equal labels (any shape)."""
    kept = labels != IGNORED
    return float((predictions[kept] == labels[kept]).mean())


def binary_f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC and QQP); 0 when there are no positives predicted or true."""
    kept = labels != IGNORED
    p, y = predictions[kept] == positive, labels[kept] == positive
    true_positives = np.sum(p & y)
    denominator = np.sum(p) + np.sum(y)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation of binary predictions (GLUE's CoLA); 0 when a margin is constant, as scikit-learn."""
    kept = labels != IGNORED
    p, y = predictions[kept].astype(bool), labels[kept].astype(bool)
    tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
    fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson's r of real-valued predictions and labels (GLUE's STS-B); 0 when either is constant."""
    p, y = predictions.astype(np.float64) - predictions.mean(), labels.astype(np.float64) - labels.mean()
    denominator = np.sqrt(np.sum(p * p) * np.sum(y * y))
    return float(np.sum(p * y) / denominator) if denominator else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, tied values sharing the mean of their ranks (scipy.stats.rankdata's "average")."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)  # mean of ranks start+1 .. end
    return ranks


def spearman_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks (GLUE's STS-B)."""
    return pearson_correlation(average_ranks(predictions), average_ranks(labels))


def glue_metric(task: str) -> Callable[[dict, dict], dict]:
    """The metric function of GLUE task `task` (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)."""
    if task not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; the GLUE tasks with metrics are: {', '.join(GLUE_TASKS)}")

    def metric(outputs: dict, batches: dict) -> dict:
        predictions, labels = outputs["predictions"], batches["labels"]
        if task == "stsb":  # a regression head's scores against the 0-5 similarity (an eval's padding rows left out)
            kept = labels != IGNORED
            return {"pearson": pearson_correlation(predictions[kept], labels[kept]),
                    "spearman": spearman_correlation(predictions[kept], labels[kept])}
        scores = {"accuracy": accuracy(predictions, labels)}
        if task in ("mrpc", "qqp"):
            scores["f1"] = binary_f1(predictions, labels)
        if task == "cola":
            scores["matthews_correlation"] = matthews_correlation(predictions, labels)
        return scores

    return metric


GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) spans of BIO/IOB2 `tags`, as seqeval's default mode reads them: an I- that does not
    continue an entity of its type starts one (so "I-PER" alone is a PER entity), B- always starts one."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate((*tags, "O")):  # the trailing O closes the last entity
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and kind == tag_kind and start is not None
        if start is not None and not continues:
            spans.add((kind, start, i - 1))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, tag_kind
    return spans


def entity_scores(predicted: Sequence[Sequence[str]], true: Sequence[Sequence[str]]) -> dict:
    """seqeval-style micro precision, recall and F1 over exact (type, start, end) span matches, per sentence."""
    matched = n_predicted = n_true = 0
    for p, t in zip(predicted, true, strict=True):
        p_spans, t_spans = entity_spans(p), entity_spans(t)
        matched += len(p_spans & t_spans)
        n_predicted += len(p_spans)
        n_true += len(t_spans)
    precision = matched / n_predicted if n_predicted else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


def token_scores(predicted: Sequence[Sequence[str]], true: Sequence[Sequence[str]], outside: str = "O") -> dict:
    """Token-level micro precision, recall and F1 of the tags other than `outside`: a token counts as predicted
    (true) when its predicted (true) tag is not O, and as matched when both are the same such tag."""
    p, t = np.array([tag for row in predicted for tag in row]), np.array([tag for row in true for tag in row])
    matched = float(np.sum((p == t) & (t != outside)))
    n_predicted, n_true = float(np.sum(p != outside)), float(np.sum(t != outside))
    precision = matched / n_predicted if n_predicted else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"token_precision": precision, "token_recall": recall, "token_f1": f1}


def tagging_metric(label_names: Sequence[str]) -> Callable[[dict, dict], dict]:
    """Token accuracy, token-level P/R/F1 of the non-O tags and entity P/R/F1 for a tagger whose label ids index
    `label_names` (e.g. "O", "B-PER")."""

    def metric(outputs: dict, batches: dict) -> dict:
        predictions, labels = outputs["predictions"], batches["labels"]  # [examples, length] each
        predicted, true = [], []
        for p_row, y_row in zip(predictions, labels):
            kept = y_row != IGNORED  # sub-word continuations and padding are not words
            predicted.append([label_names[i] for i in p_row[kept]])
            true.append([label_names[i] for i in y_row[kept]])
        return {"token_accuracy": accuracy(predictions, labels), **token_scores(predicted, true),
                **entity_scores(predicted, true)}

    return metric


def bleu_and_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacrebleu's corpus BLEU and chrF (one reference per hypothesis), the scores translation papers report."""
    import sacrebleu  # only the generation eval needs it

    return {"bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
            "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score}


def translation_metric(tokenizer) -> Callable[[dict, dict], dict]:
    """sacreBLEU, chrF (`bleu_and_chrf`) and exact_match (the fraction of hypotheses whose text equals their
    reference's) of the eval's generated translations (`generated_ids`, the seq2seq task's greedy decoding) against
    the `labels`, both decoded by `tokenizer` (the target one of a `TranslationTokenizers` pair). A hypothesis ends at
    its first end-of-text id, as every target does in the data; a row with no target token (all -100) only fills a
    batch and is not scored. Raises ValueError when no row has a target."""
    from train.data.loader import end_of_text_id
    from zoo.tokenizers import TranslationTokenizers

    target = tokenizer.target if isinstance(tokenizer, TranslationTokenizers) else tokenizer
    eos = end_of_text_id(target)

    def text(ids) -> str:
        ids = [int(i) for i in ids]
        return target.decode(ids[:ids.index(eos)] if eos in ids else ids)

    def metric(outputs: dict, batches: dict) -> dict:
        generated, labels = outputs["generated_ids"], batches["labels"]  # [examples, target_length] each
        kept = np.any(labels != IGNORED, axis=-1)
        if not kept.any():
            raise ValueError(f"none of the {len(labels)} eval rows has a target token (labels all {IGNORED}): "
                             f"there is no reference to score the translations against")
        hypotheses = [text(row) for row in generated[kept]]
        references = [text(row[row != IGNORED]) for row in labels[kept]]
        exact_match = float(np.mean([h == r for h, r in zip(hypotheses, references)]))
        return {**bleu_and_chrf(hypotheses, references), "exact_match": exact_match}

    return metric


METRICS = {f"glue/{t}": glue_metric(t) for t in GLUE_TASKS}


def real_window_rows(batches: dict) -> np.ndarray:
    """[rows] bool: the rows holding a context window. A row an eval adds to fill a batch has no context token
    (every token_char_end <= token_char_start), and train.squad would score it as an answer to example 0."""
    return np.any(np.asarray(batches["token_char_end"]) > np.asarray(batches["token_char_start"]), axis=-1)


def squad_metric(config) -> Callable[[dict, dict], dict]:
    """SQuAD v1.1 exact_match and f1 (train.squad) against the recipe's data.eval_split, padding rows dropped."""
    from train import squad  # reads the tfds eval split: only a SQuAD recipe pays for it

    score = squad.squad_metric_from_config(config)

    def metric(outputs: dict, batches: dict) -> dict:
        kept = real_window_rows(batches)
        return score({k: v[kept] for k, v in outputs.items()}, {k: v[kept] for k, v in batches.items()})

    return metric


def _translation_metric(config) -> Callable[[dict, dict], dict]:
    from train.inputs import recipe_tokenizer  # the generated text is decoded by the recipe's tokenizer

    return translation_metric(recipe_tokenizer(config))


def _tagging_metric(config) -> Callable[[dict, dict], dict]:
    from train.inputs import tagging_label_names  # train.inputs imports the data pipeline: only taggers need it

    return tagging_metric(tagging_label_names(config.data))


# metrics made from the recipe's config, and what each reads there
RECIPE_METRICS = {"squad": (squad_metric, "the eval split it scores against"),
                  "translation": (_translation_metric, "the tokenizer that decodes the text"),
                  "tagging": (_tagging_metric, "its data's tag names")}


def get_metric(name: str, config=None) -> Callable[[dict, dict], dict]:
    """The metric named `name` (`config.eval.metric`); a ValueError lists the known names. Those of
    `RECIPE_METRICS` ("squad", "translation", "tagging") need the recipe's `config`."""
    if name in RECIPE_METRICS:
        make, reads = RECIPE_METRICS[name]
        if config is None:
            raise ValueError(f"eval metric {name!r} needs the recipe's config ({reads})")
        return make(config)
    if name not in METRICS:
        raise ValueError(f"unknown eval metric {name!r}; the metrics are: {', '.join((*METRICS, *RECIPE_METRICS))}")
    return METRICS[name]
