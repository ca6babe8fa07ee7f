"""eval.metric "translation": the eval step's greedy decoding against zoo.generate, its scores against sacrebleu on
the same text, and a tiny run of the transformer_tiny recipe writing them to metrics.jsonl."""

import jax
import numpy as np
import optax
import pytest

import zoo
from tests.model_helpers import random_params
from train import data
from train.benchmarks import get_metric, translation_metric
from train.loop import global_batch
from train.partitioning import batch_sharding, make_mesh
from train.step import compile_steps, init_train_state
from train.tasks import Task, argmax_predictions, get_task, greedy_translations

TOKENIZER = data.shipped_tokenizer()
EOS = TOKENIZER.sep_id  # the shipped vocabulary ends a text with [SEP]
TARGET_LENGTH = 16  # the date recipes' data.max_target_length: a date is 9 WordPiece tokens, then EOS


def target_row(text: str) -> np.ndarray:
    """[TARGET_LENGTH] labels as the seq2seq data makes them: the text's ids, EOS, then -100."""
    ids = [*TOKENIZER.encode(text, add_special_tokens=False), EOS]
    return np.array(ids + [-100] * (TARGET_LENGTH - len(ids)), np.int32)


def generated_row(text: str, after_eos=()) -> np.ndarray:
    """[TARGET_LENGTH] generated ids: the text's, EOS, then `after_eos` (which a hypothesis ends before), then pad."""
    ids = [*TOKENIZER.encode(text, add_special_tokens=False), EOS, *after_eos]
    return np.array(ids + [TOKENIZER.pad_id] * (TARGET_LENGTH - len(ids)), np.int32)


def test_translation_metric_is_sacrebleu_of_the_decoded_text_and_exact_match_of_the_strings():
    sacrebleu = pytest.importorskip("sacrebleu")
    references = ["2002-03-25", "1999-12-01", "2010-07-14"]
    guesses = ["2002-03-25", "1999-12-02", "2010-07-14"]  # the second is a day off
    labels = np.stack([*map(target_row, references), np.full(TARGET_LENGTH, -100, np.int32)])  # a filling row
    a_word = tuple(TOKENIZER.encode("march", add_special_tokens=False))
    generated = np.stack([generated_row(guesses[0]), generated_row(guesses[1]),
                          generated_row(guesses[2], after_eos=a_word),
                          generated_row("1990-01-01")])  # the filling row's guess, which must not count
    scores = translation_metric(TOKENIZER)({"generated_ids": generated}, {"labels": labels})

    decoded = ["2002 - 03 - 25", "1999 - 12 - 02", "2010 - 07 - 14"]  # WordPiece splits off the hyphens
    decoded_references = ["2002 - 03 - 25", "1999 - 12 - 01", "2010 - 07 - 14"]
    assert [TOKENIZER.decode(TOKENIZER.encode(g, add_special_tokens=False)) for g in guesses] == decoded
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(decoded, [decoded_references]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(decoded, [decoded_references]).score)
    assert 0 < scores["bleu"] < 100
    assert scores["exact_match"] == pytest.approx(2 / 3)  # 3 scored rows, the word after an EOS cut off


def test_translation_metric_needs_the_recipes_config_and_a_row_with_a_target():
    with pytest.raises(ValueError, match="'translation' needs the recipe's config"):
        get_metric("translation")
    labels = np.full((2, TARGET_LENGTH), -100, np.int32)
    with pytest.raises(ValueError, match="none of the 2 eval rows has a target token"):
        translation_metric(TOKENIZER)({"generated_ids": labels}, {"labels": labels})


def test_the_eval_step_on_the_sharded_batch_generates_what_greedy_zoo_generate_does():
    """Eight rows over the eight simulated devices, sources of several lengths; random weights (a draw on which the
    greedy tokens differ between rows, and within some) so that a row decoded from another row's source, mask or
    step would show."""
    model = zoo.create("transformer-tiny", task="seq2seq")
    ids = np.ones((1, 4), np.int32)
    params = random_params(model, ids, ids, scale=0.4, seed=2)["params"]
    mesh = make_mesh()
    tx = optax.sgd(0.0)
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh, params=params)
    _, eval_step = compile_steps(model, tx, lambda step: 0.0, shardings, mesh, task=get_task("seq2seq"),
                                 eval_outputs=True)
    rng = np.random.default_rng(0)
    lengths = np.array([3, 12, 7, 12, 5, 9, 2, 10])
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)  # [8, 12], right-padded sources
    labels = rng.integers(5, 1000, (8, TARGET_LENGTH)).astype(np.int32)
    batch = {"input_ids": np.where(mask, rng.integers(5, 1000, (8, 12)), 0).astype(np.int32),
             "attention_mask": mask, "labels": labels,
             "decoder_input_ids": np.pad(labels[:, :-1], ((0, 0), (1, 0))),
             "decoder_attention_mask": np.ones_like(labels)}
    _, per_example = eval_step(state.params, global_batch(batch, batch_sharding(mesh)))

    expected = zoo.generate(model, params, batch["input_ids"], batch["attention_mask"],
                            max_new_tokens=TARGET_LENGTH, method="greedy").sequences
    generated = np.asarray(per_example["outputs"]["generated_ids"])
    np.testing.assert_array_equal(generated, np.asarray(expected)[:, 1:])  # [8, TARGET_LENGTH], the start dropped
    assert len({tuple(row) for row in generated}) >= 5, generated  # not a comparison of constant rows
    assert any(len(np.unique(row)) > 2 for row in generated), generated
    np.testing.assert_array_equal(np.asarray(per_example["batch"]["labels"]), labels)


def test_a_task_has_one_kind_of_predictions():
    with pytest.raises(ValueError, match="has both predictions and generated_predictions"):
        Task("both", head="seq2seq", inputs=(), labels=(), loss=None, data=None, predictions=argmax_predictions,
             generated_predictions=greedy_translations)


def test_a_tiny_transformer_tiny_run_writes_bleu_chrf_and_exact_match(tmp_path):
    """60 steps of the recipe (enough for a first few right characters), one eval of two batches: the row holds the
    scores of the final params' greedy translations, decoded here with zoo.generate and the recipe's tokenizer."""
    from train.loop import create_model, train_and_evaluate
    from train.metrics import read_metrics
    from train.recipes import load_recipe
    from train.tasks import make_datasets

    config = load_recipe("transformer_tiny")
    config.train.update(dict(steps=60, batch_size=8, log_every=60, eval_every=60))
    config.schedule.warmup_steps = 5
    config.checkpoint.every_steps = 60
    config.data.update(dict(num_examples=512, num_eval_examples=16, eval_batches=2))
    model, _ = create_model(config)
    datasets = make_datasets(config, model)
    state, metrics = train_and_evaluate(config, str(tmp_path), datasets.train, datasets.eval, model=model,
                                        show_progress=False)
    evals = [row for row in read_metrics(str(tmp_path)) if "eval_loss" in row]
    assert [row["step"] for row in evals] == [60]
    assert {"eval_bleu", "eval_chrf", "eval_exact_match"} <= set(evals[0])
    assert metrics["eval_bleu"] == evals[0]["eval_bleu"]

    params = jax.device_get(state.params)
    batches = list(datasets.eval())
    generated = np.concatenate([np.asarray(zoo.generate(model, params, b["input_ids"], b["attention_mask"],
                                                        max_new_tokens=config.data.max_target_length).sequences)[:, 1:]
                                for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])  # [16, 16]
    expected = translation_metric(datasets.tokenizer)({"generated_ids": generated}, {"labels": labels})
    assert expected["chrf"] > 0, expected  # not a comparison of zeros
    for name in ("bleu", "chrf", "exact_match"):
        assert evals[0][f"eval_{name}"] == pytest.approx(expected[name], abs=1e-9), name
