"""What RoBERTa and DistilBERT add to BERT's layout: positions past the padding index, a length limit that follows from
them, DistilBERT's stored sinusoid and its pooler-less bare model. Their parity with `transformers`, every
architecture both ways, is in test_checkpoints.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_checkpoints import (assert_outputs_close, batch, edit_config, public_model, saved, torch_outputs,
                                    zoo_outputs)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo  # noqa: E402
from zoo.embeddings import padding_offset_position_ids  # noqa: E402


def test_roberta_positions_are_those_transformers_numbers_from_the_ids():
    ids = np.array([[0, 5, 6, 7, 2, 1, 1], [0, 5, 1, 6, 2, 1, 1], [1, 1, 0, 5, 6, 7, 2]])
    expected = transformers.RobertaModel(transformers.RobertaConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).embeddings \
        .create_position_ids_from_input_ids(torch.as_tensor(ids), padding_idx=1)
    np.testing.assert_array_equal(padding_offset_position_ids(jnp.asarray(ids), 1), expected.numpy())
    np.testing.assert_array_equal(padding_offset_position_ids(jnp.asarray(ids[:1]), 1), [[2, 3, 4, 5, 6, 1, 1]])


def test_roberta_input_longer_than_its_positions_past_the_padding_index_is_a_value_error(key):
    model = zoo.create("roberta-tiny")  # 130 positions: 128 tokens after position 0 and the padding index 1
    jax.eval_shape(model.init, key, jnp.full((1, 128), 5, jnp.int32))
    with pytest.raises(ValueError, match=r"input_ids has length 129, longer than the model's 128 tokens \(max_length "
                                         r"130 positions, numbered from past pad_token_id 1\)"):
        jax.eval_shape(model.init, key, jnp.full((1, 129), 5, jnp.int32))
    assert zoo.get_config("roberta-base").max_tokens == 512


def test_extended_roberta_positions_keep_the_rows_up_to_the_padding_index_and_tile_the_rest():
    model = zoo.create("roberta-tiny", max_length=6)  # rows 0 and 1 (the padding index), then 4 token positions
    table = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 64), np.float32)
    long, params = zoo.extend_positions(model, {"embeddings": {"position_embedding": {"embedding": table}}}, 12)
    assert long.config.max_tokens == 10
    np.testing.assert_array_equal(params["embeddings"]["position_embedding"]["embedding"][:, 0],
                                  [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 2, 3])


def test_roberta_lm_head_is_gelu_whatever_hidden_act_says_so_another_is_a_named_error(tmp_path):
    saved(tmp_path, "roberta-tiny", task="mlm")
    edit_config(tmp_path, hidden_act="relu")
    with pytest.raises(ValueError, match="hidden_act='relu'.*gelu"):
        zoo.from_pretrained(tmp_path)
    model, _ = zoo.from_pretrained(tmp_path, task="token_classification")  # the body alone follows hidden_act
    assert model.config.activation == "relu"


def test_distilbert_sinusoidal_table_is_read_from_the_file_and_saved_as_learned(tmp_path):
    reference = public_model("DistilBertModel", sinusoidal_pos_embds=True)
    table = transformers.DistilBertModel(reference.config).embeddings.position_embeddings.weight.detach()
    reference.embeddings.position_embeddings.weight.data.copy_(table)  # public_model randomized it
    reference.save_pretrained(tmp_path / "public")
    model, params = zoo.from_pretrained(tmp_path / "public")
    angles = np.arange(64)[:, None] / np.power(10000, 2 * (np.arange(32) // 2) / 32)
    interleaved = np.where(np.arange(32) % 2 == 0, np.sin(angles), np.cos(angles))  # sin at even dims, cos at odd
    np.testing.assert_allclose(params["embeddings"]["position_embedding"]["embedding"], interleaved, atol=1e-6)
    inputs = batch("distilbert")
    assert_outputs_close(zoo_outputs(model, params, inputs, None), torch_outputs(reference, inputs, None))
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    loaded = transformers.DistilBertModel.from_pretrained(tmp_path / "zoo").eval()
    assert not loaded.config.sinusoidal_pos_embds
    assert_outputs_close(zoo_outputs(model, params, inputs, None), torch_outputs(loaded, inputs, None))


def test_bare_distilbert_has_no_pooler_but_its_sequence_classifier_has_one(key):
    # DistilBertModel has no pooler; the classifier's pre_classifier + ReLU is zoo's pooler (the parity tests check
    # its outputs), so both parameter counts are transformers'.
    shapes = lambda task: jax.eval_shape(zoo.create("distilbert-tiny", task=task).init, key,
                                         jnp.ones((1, 4), jnp.int32))["params"]
    assert set(shapes(None)) == {"token_embedding", "embeddings", "encoder"}
    assert "pooler" in shapes("sequence_classification")


@pytest.mark.parametrize("fields, message", [
    (dict(padding_offset_positions=True, causal=True), "padding_offset_positions=True .* bidirectional"),
    (dict(padding_offset_positions=True, max_length=2, pad_token_id=1), "pad_token_id \\+ 1 = 2, past the"),
    (dict(pooler_activation="relu", pooling="mean"), "pooler_activation='relu' .* needs pooling='cls'"),
    (dict(pooler_activation="gelu"), "pooler_activation='gelu' is not one of"),
])
def test_switches_that_do_not_fit_together_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        zoo.get_config("bert-tiny", **fields)
