"""BART's own details: its position offset, its decoder inputs derived from the source, its classifier at the last
</s>. (Parity of every architecture both ways is in test_checkpoints.py, generation in test_generate.py.)"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.model_helpers import jitted_apply, random_params
from train.optimizer import make_optimizer, make_schedule
from train.partitioning import make_mesh
from train.step import compile_steps, init_train_state
from tests.train_helpers import tiny_config
from train.tasks import TASKS, make_datasets, model_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.test_checkpoints import assert_outputs_close, batch, public_model, torch_outputs, zoo_outputs  # noqa: E402


@pytest.mark.parametrize("architecture, task", [("BartForConditionalGeneration", "seq2seq"),
                                                ("BartForSequenceClassification", "sequence_classification")])
def test_without_decoder_inputs_zoo_shifts_the_source_right_as_transformers_does(architecture, task, tmp_path):
    reference = public_model(architecture)
    reference.save_pretrained(tmp_path)
    model, params = zoo.from_pretrained(tmp_path)
    inputs = {k: v for k, v in batch("bart").items() if not k.startswith("decoder_")}
    ours, theirs = zoo_outputs(model, params, inputs, task), torch_outputs(reference, inputs, task)
    theirs.pop("loss", None)  # the seq2seq labels of `batch` are the decoder inputs, which these have none of
    ours.pop("loss", None)
    assert_outputs_close(ours, theirs)


def layer_norm(x, norm, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + eps) * norm["scale"] + norm["bias"]


def test_learned_positions_read_the_table_past_its_offset_rows():
    model = zoo.create("bart-tiny")
    ids = jnp.array([[5, 6, 7]])
    params = random_params(model, ids, ids, scale=0.2)["params"]
    embedded = model.apply({"params": params}, ids, method=lambda m, i: m.encoder_embeddings(
        i, jnp.arange(3)[None], deterministic=True))
    embeddings = params["encoder_embeddings"]
    x = params["token_embedding"]["embedding"][ids[0]] + embeddings["position_embedding"]["embedding"][2:5]
    chex.assert_trees_all_close(embedded[0], layer_norm(x, embeddings["embedding_norm"]), atol=1e-5)


def test_position_offset_leaves_max_length_less_the_offset_for_tokens(key):
    assert (zoo.get_config("bart-base").max_length, zoo.get_config("bart-base").max_tokens) == (1026, 1024)
    model = zoo.create("bart-tiny")  # 130 rows: 128 tokens
    model.init(key, jnp.full((1, 128), 5), jnp.full((1, 128), 5))
    with pytest.raises(ValueError, match="longer than"):
        model.init(key, jnp.full((1, 129), 5), jnp.full((1, 128), 5))


@pytest.mark.parametrize("fields, message", [
    (dict(position_embedding="sinusoidal"), "position_embedding='learned'"),
    (dict(padding_offset_positions=True), "padding_offset_positions"),
    (dict(position_offset=-1), "position_offset >= 0"),
    (dict(max_length=2), "leaves no position"),
])
def test_position_offset_that_does_not_fit_is_a_named_error(fields, message):
    with pytest.raises(ValueError, match=message):
        zoo.get_config("bart-tiny", **fields)


def test_classifier_reads_the_decoder_state_at_the_last_eos_of_each_row():
    model = zoo.create("bart-tiny", task="sequence_classification", num_labels=3)
    ids = jnp.array([[5, 2, 7, 2, 1, 1], [5, 6, 7, 8, 9, 2]])
    variables = random_params(model, ids, ids, scale=0.2)
    out = jitted_apply(model)(variables, ids, attention_mask=(ids != 1).astype(jnp.int32))
    head = variables["params"]["classification_head"]
    hidden = out.last_hidden_state[jnp.arange(2), jnp.array([3, 5])]  # [2, hidden]
    dense = jnp.tanh(hidden @ head["dense"]["kernel"] + head["dense"]["bias"])
    chex.assert_trees_all_close(out.logits, dense @ head["out_proj"]["kernel"] + head["out_proj"]["bias"], atol=1e-5)


def test_decoder_inputs_are_required_only_of_a_config_that_cannot_derive_them(key):
    model = zoo.create("transformer-tiny", decoder_start_token_id=None)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model.init(key, jnp.full((1, 4), 5))


def one_step(model, task, batch):
    """(params before, metrics of one train step on `batch`) on one device."""
    schedule = make_schedule("linear", peak_value=1e-3, warmup_steps=1, total_steps=10)
    tx = make_optimizer(schedule)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    train_step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=task)
    params = jax.device_get(state.params)
    return params, train_step(state, batch, jax.random.key(1))[1]


def test_text_infilling_task_gives_bart_denoising_batches_and_trains(tmp_path):
    config = tiny_config("bart-tiny", "text_infilling")
    config.data.update({"source": "shipped", "tokenizer": "shipped", "max_length": 32})
    task = TASKS[config.task]
    model = zoo.create(config.model, task=task.head, dropout_rate=0.0)
    batch = next(make_datasets(config, model).train)
    assert set(model_inputs(task, batch)) == {"input_ids", "attention_mask", "decoder_input_ids",
                                              "decoder_attention_mask"}
    params, metrics = one_step(model, task, batch)
    logits = model.apply({"params": params}, **model_inputs(task, batch)).logits
    labels = batch["labels"]
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    expected = -jnp.sum(jnp.where(labels >= 0, log_probs, 0)) / jnp.sum(labels >= 0)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), atol=1e-5)


def test_seq2seq_classification_task_trains_bart_on_the_source_alone():
    task = TASKS["seq2seq_classification"]
    model = zoo.create("bart-tiny", task=task.head, dropout_rate=0.0)
    ids = jnp.array([[5, 6, 2, 1], [7, 8, 9, 2]] * 4)
    batch = {"input_ids": ids, "attention_mask": (ids != 1).astype(jnp.int32), "labels": jnp.array([0, 1] * 4),
             "token_type_ids": jnp.zeros_like(ids)}  # a key the task does not pass on
    assert set(model_inputs(task, batch)) == {"input_ids", "attention_mask"}
    params, metrics = one_step(model, task, batch)
    logits = model.apply({"params": params}, ids, attention_mask=batch["attention_mask"]).logits
    expected = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), batch["labels"]])
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), atol=1e-5)


@pytest.mark.parametrize("architecture", ["BartForConditionalGeneration", "MarianMTModel"])
def test_activation_dropout_is_read_and_written_with_the_checkpoint(architecture, tmp_path):
    reference = public_model(architecture)
    reference.config.activation_dropout = 0.25
    reference.save_pretrained(tmp_path / "theirs")
    model, params = zoo.from_pretrained(tmp_path / "theirs")
    assert model.config.activation_dropout_rate == 0.25
    zoo.save_pretrained(model, params, tmp_path / "ours")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "ours").activation_dropout == 0.25
