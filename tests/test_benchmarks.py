"""Benchmark metrics (train.benchmarks) against hand-computed values and sacrebleu, and one tiny run reporting one."""

import json

import numpy as np
import pytest

from train.benchmarks import (binary_f1, bleu_and_chrf, entity_scores, entity_spans, get_metric, glue_metric,
                              matthews_correlation, tagging_metric)

PREDICTED = np.array([1, 1, 0, 0, 1, 0, 1, 1])
LABELS = np.array([1, 0, 0, 1, 1, 0, -100, 1])  # one ignored row: 7 scored, tp=3 fp=1 fn=1 tn=2


def test_f1_and_matthews_correlation_by_hand():
    assert binary_f1(PREDICTED, LABELS) == pytest.approx(2 * 3 / (4 + 4))
    assert matthews_correlation(PREDICTED, LABELS) == pytest.approx((3 * 2 - 1 * 1) / np.sqrt(4 * 4 * 3 * 3))
    assert matthews_correlation(np.ones(4, int), np.array([1, 0, 1, 0])) == 0.0  # constant predictions


def test_glue_metrics_per_task():
    outputs, batches = {"predictions": PREDICTED}, {"labels": LABELS}
    assert set(glue_metric("sst2")(outputs, batches)) == {"accuracy"}
    assert glue_metric("sst2")(outputs, batches)["accuracy"] == pytest.approx(5 / 7)
    assert set(glue_metric("mrpc")(outputs, batches)) == {"accuracy", "f1"}
    assert set(glue_metric("cola")(outputs, batches)) == {"accuracy", "matthews_correlation"}
    with pytest.raises(ValueError, match="unknown eval metric 'glue/sst3'"):
        get_metric("glue/sst3")


def test_stsb_correlations_equal_scipys_with_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(0, 5, 40) * 2) / 2  # STS-B's scores come in halves: many ties
    predictions = np.round(labels + rng.normal(0, 1.0, 40), 1).astype(np.float32)
    scores = glue_metric("stsb")({"predictions": predictions}, {"labels": labels.astype(np.float32)})
    assert set(scores) == {"pearson", "spearman"}
    assert scores["pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-6)
    assert scores["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-6)


def test_regression_loss_equals_transformers_mse_and_float_labels_need_one_output(tmp_path):
    """num_labels=1 is transformers' problem_type "regression": the loss is the mean squared error of the one
    output, as BertForSequenceClassification computes it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import jax.numpy as jnp

    import zoo
    from tests.test_checkpoints import batch
    from train import losses

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, num_labels=1)
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path)
    model, params = zoo.from_pretrained(tmp_path)
    inputs = batch("bert")
    scores = np.array([0.5, 4.25], np.float32)
    with torch.no_grad():
        expected = reference(**{k: torch.as_tensor(v) for k, v in inputs.items()},
                             labels=torch.tensor(scores)).loss.item()
    outputs = model.apply({"params": params}, **{k: jnp.asarray(v) for k, v in inputs.items()})
    loss, metrics = losses.sequence_classification_loss(outputs, {"labels": jnp.asarray(scores)})
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert set(losses.summarize(metrics)) == {"loss"}  # no accuracy for a regression
    two_classes = outputs.replace(logits=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="labels are real numbers .* set model_overrides.num_labels=1"):
        losses.sequence_classification_loss(two_classes, {"labels": jnp.asarray(scores)})


def test_entity_spans_edge_cases():
    assert entity_spans(["I-PER", "I-PER", "O"]) == {("PER", 0, 1)}  # I- without B- starts an entity
    assert entity_spans(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 0), ("PER", 1, 2)}  # adjacent entities
    assert entity_spans(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # a type change starts another
    assert entity_spans(["O", "B-LOC"]) == {("LOC", 1, 1)}  # an entity at the end


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-ORG"]]  # 2 of 4 predicted match, 2 of 3 true
    scores = entity_scores(predicted, true)
    assert scores["entity_precision"] == pytest.approx(0.5)
    assert scores["entity_recall"] == pytest.approx(2 / 3)
    assert scores["entity_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_tagging_metric_skips_ignored_positions():
    names = ["O", "B-PER", "I-PER"]
    labels = np.array([[1, -100, 2, 0], [0, 1, -100, -100]])  # -100: a sub-word continuation and padding
    predictions = np.array([[1, 0, 2, 0], [0, 2, 1, 1]])  # besides ignored positions only row 2's I-PER differs
    scores = tagging_metric(names)({"predictions": predictions}, {"labels": labels})
    assert scores["token_accuracy"] == pytest.approx(4 / 5)  # 5 scored positions
    assert scores["entity_f1"] == pytest.approx(1.0)  # that I-PER alone is still the true PER span (1, 1)
    # tokens: 3 true non-O, 3 predicted non-O, 2 of them the same tag (row 2's I-PER for B-PER is not)
    assert (scores["token_precision"], scores["token_recall"], scores["token_f1"]) == pytest.approx((2 / 3,) * 3)


def test_bleu_and_chrf_equal_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    hypotheses = ["the cat sat on the mat", "2024-01-05", "a quick brown fox"]
    references = ["the cat sat on a mat", "2024-01-05", "the quick brown fox jumps"]
    scores = bleu_and_chrf(hypotheses, references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)


def test_tiny_run_reports_the_glue_metric_and_keeps_the_best(tmp_path):
    from tests.train_helpers import SyntheticBatches, tiny_config
    from train.loop import train_and_evaluate

    c = tiny_config(task="sequence_classification", steps=4, every_steps=1)
    c.model_overrides.update({"num_labels": 2})
    c.train.eval_every = 1
    c.eval.metric = "glue/cola"
    # a checkpoint's metrics must hold best_metric (orbax reads it at every save)
    c.checkpoint.update({"best_metric": "eval_matthews_correlation", "best_mode": "max", "keep": 1})
    eval_batches = lambda: [next(SyntheticBatches(task="sequence_classification", seed=7))]
    train_and_evaluate(c, str(tmp_path), SyntheticBatches(task="sequence_classification"), eval_batches,
                       show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    assert len(evals) == 4 and all("eval_matthews_correlation" in r and "eval_accuracy" in r for r in evals)
    best = max(evals, key=lambda r: r["eval_matthews_correlation"])  # the first of equals: orbax keeps the first too
    kept = {int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()}
    assert best["step"] in kept, (kept, [(r["step"], r["eval_matthews_correlation"]) for r in evals])


# Host {pid} of two: a tiny classifier that trains 3 steps and evaluates at the last one with MRPC's F1.
TWO_HOST_CLASSIFIER = r"""
import sys
sys.path.insert(0, {repo!r})
import jax
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id={pid})
from tests.train_helpers import SyntheticBatches, tiny_config
from train.loop import pad_rows, train_and_evaluate
config = tiny_config(task="sequence_classification", steps=3, every_steps=3)
config.model_overrides.update(dict(num_labels=2))
config.train.eval_every, config.eval.metric = 3, "glue/mrpc"
"""

TWO_HOSTS = TWO_HOST_CLASSIFIER + r"""
eval_batches = lambda: [next(SyntheticBatches(task="sequence_classification", seed=7, process_index={pid},
                                              process_count=2))]
_, metrics = train_and_evaluate(config, {workdir!r}, SyntheticBatches(task="sequence_classification",
                                process_index={pid}, process_count=2), eval_batches, show_progress=False)
print("RESULT", repr(metrics["eval_f1"]), repr(metrics["eval_accuracy"]))
"""


@pytest.mark.slow
def test_two_hosts_score_the_predictions_of_both(tmp_path):
    """Each host feeds half of each eval batch; the metric sees all rows, so both hosts report the same F1."""
    from tests.train_helpers import run_two_hosts

    results = run_two_hosts(TWO_HOSTS, tmp_path / "run", timeout=600)
    assert len(results) == 2 and results[0] == results[1]


UNEVEN_HOSTS = TWO_HOST_CLASSIFIER + r"""
batch = lambda seed: next(SyntheticBatches(task="sequence_classification", seed=seed, process_index={pid},
                                           process_count=2))
padding = pad_rows({{k: v[:0] for k, v in batch(7).items()}}, len(batch(7)["labels"]), ["labels"])
def run(workdir, eval_batches):
    train = SyntheticBatches(task="sequence_classification", process_index={pid}, process_count=2)
    return train_and_evaluate(config, workdir, train, eval_batches, show_progress=False)[1]
# host 0 holds two eval batches, host 1 one; then host 1 pads its second by hand; then host 1 holds none
uneven = run({workdir!r} + "/uneven", lambda: [batch(7), batch(8)] if {pid} == 0 else [batch(7)])
padded = run({workdir!r} + "/padded", lambda: [batch(7), batch(8)] if {pid} == 0 else [batch(7), padding])
try:
    run({workdir!r} + "/empty", lambda: [batch(7)] if {pid} == 0 else [])
    error = "none"
except ValueError as raised:
    error = str(raised).replace(" ", "_")
print("RESULT", repr(uneven["eval_loss"]), repr(uneven["eval_f1"]), repr(padded["eval_loss"]),
      repr(padded["eval_f1"]), error)
"""


@pytest.mark.slow
def test_hosts_with_uneven_eval_batches_take_the_same_steps_and_count_every_row(tmp_path):
    """Host 1 runs out of eval batches first: it must still enter host 0's last eval step (a collective), with rows
    that count for nothing, as a batch of padding rows would; a host without any eval batch is an error on both."""
    from tests.train_helpers import run_two_hosts

    results = run_two_hosts(UNEVEN_HOSTS, tmp_path, timeout=600)
    assert len(results) == 2 and results[0] == results[1]
    uneven_loss, uneven_f1, padded_loss, padded_f1, error = results[0]
    assert (uneven_loss, uneven_f1) == (padded_loss, padded_f1)
    assert "host(s)_[1]_of_2_have_no_eval_batch" in error


def test_squad_scores_the_windows_and_drops_the_rows_that_fill_a_batch(monkeypatch):
    """Two real windows (one per example) answer right and wrong; a zero-filled row (no context token) would answer
    for example 0 and must not count: EM 50, not a third example's worth."""
    from train import benchmarks, squad

    contexts, references = ["cat sat", "dog ran"], [["cat"], ["ran"]]
    monkeypatch.setattr(squad, "squad_metric_from_config", lambda config: squad.squad_metric(contexts, references))
    # tokens: [CLS] word word [PAD]; chars of "xxx yyy" are 0-3 and 4-7; -1 outside the context
    char_start = np.array([[-1, 0, 4, -1], [-1, 0, 4, -1], [0, 0, 0, 0]])
    char_end = np.array([[-1, 3, 7, -1], [-1, 3, 7, -1], [0, 0, 0, 0]])
    pick_first, pick_second = np.array([0.0, 9.0, 1.0, 0.0]), np.array([0.0, 1.0, 9.0, 0.0])
    outputs = {"start_logits": np.stack([pick_first, pick_first, pick_first]),
               "end_logits": np.stack([pick_first, pick_first, pick_first])}
    batches = {"example_index": np.array([0, 1, 0]), "token_char_start": char_start, "token_char_end": char_end}
    assert benchmarks.real_window_rows(batches).tolist() == [True, True, False]
    scores = get_metric("squad", config=object())(outputs, batches)
    assert scores["exact_match"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(50.0)
    outputs["start_logits"][1] = outputs["end_logits"][1] = pick_second
    assert get_metric("squad", config=object())(outputs, batches)["exact_match"] == pytest.approx(100.0)


def test_squad_needs_the_recipes_config():
    with pytest.raises(ValueError, match="needs the recipe's config"):
        get_metric("squad")


def test_a_real_valued_label_makes_a_float_regression_target():
    from train.data import classification_batches, shipped_tokenizer

    records = [("a cat sat", "a cat sat down", 3.8), ("a dog", "the sea", 0.2)]
    rows = next(iter(classification_batches(records, shipped_tokenizer(), batch_size=2, max_length=16,
                                            shuffle=False)))
    assert rows["labels"].dtype == np.float32
    np.testing.assert_allclose(rows["labels"], [3.8, 0.2], rtol=1e-6)
    classes = next(iter(classification_batches([("a cat", 1), ("a dog", 0)], shipped_tokenizer(), batch_size=2,
                                               max_length=16, shuffle=False)))
    assert classes["labels"].dtype == np.int32
