"""Public checkpoints both ways: every architecture's outputs and losses equal PyTorch `transformers` after loading its
safetensors into zoo, and after saving zoo's params and loading them into `transformers`."""

import json
import logging
import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.model_helpers import jitted_apply, random_params
from tests.train_helpers import xla_flags

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)

TINY = dict(vocab_size=99, max_position_embeddings=64)
PUBLIC_CONFIGS = {
    "bert": lambda: transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=37, num_labels=3, **TINY),
    "albert": lambda: transformers.AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=3,
                                                num_attention_heads=4, intermediate_size=37, num_labels=3, **TINY),
    "roberta": lambda: transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                  intermediate_size=37, num_labels=3, type_vocab_size=1,
                                                  layer_norm_eps=1e-5, **TINY),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=37, num_labels=3, type_vocab_size=1,
                                                         layer_norm_eps=1e-5, **TINY),
    "distilbert": lambda: transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, num_labels=3,
                                                        **TINY),
    "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64,
                                            bos_token_id=1, eos_token_id=2),
    "marian": lambda: transformers.MarianConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=37, decoder_ffn_dim=37, scale_embedding=True, activation_function="swish", pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0, **TINY),
    "bart": lambda: transformers.BartConfig(
        d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=37, decoder_ffn_dim=37, num_labels=3, **TINY),
}
ARCHITECTURES = {
    "BertModel": ("bert", None), "BertForPreTraining": ("bert", "pretraining"), "BertForMaskedLM": ("bert", "mlm"),
    "BertForSequenceClassification": ("bert", "sequence_classification"),
    "BertForTokenClassification": ("bert", "token_classification"),
    "BertForQuestionAnswering": ("bert", "question_answering"),
    "AlbertModel": ("albert", None), "AlbertForPreTraining": ("albert", "pretraining"),
    "AlbertForMaskedLM": ("albert", "mlm"), "AlbertForSequenceClassification": ("albert", "sequence_classification"),
    "AlbertForTokenClassification": ("albert", "token_classification"),
    "AlbertForQuestionAnswering": ("albert", "question_answering"),
    "RobertaModel": ("roberta", None), "RobertaForMaskedLM": ("roberta", "mlm"),
    "RobertaForSequenceClassification": ("roberta", "sequence_classification"),
    "RobertaForTokenClassification": ("roberta", "token_classification"),
    "RobertaForQuestionAnswering": ("roberta", "question_answering"),
    "XLMRobertaModel": ("xlm-roberta", None), "XLMRobertaForMaskedLM": ("xlm-roberta", "mlm"),
    "XLMRobertaForSequenceClassification": ("xlm-roberta", "sequence_classification"),
    "DistilBertModel": ("distilbert", None), "DistilBertForMaskedLM": ("distilbert", "mlm"),
    "DistilBertForSequenceClassification": ("distilbert", "sequence_classification"),
    "DistilBertForTokenClassification": ("distilbert", "token_classification"),
    "DistilBertForQuestionAnswering": ("distilbert", "question_answering"),
    "GPT2Model": ("gpt2", None), "GPT2LMHeadModel": ("gpt2", "causal_lm"),
    "MarianModel": ("marian", None), "MarianMTModel": ("marian", "seq2seq"),
    "BartModel": ("bart", None), "BartForConditionalGeneration": ("bart", "seq2seq"),
    "BartForSequenceClassification": ("bart", "sequence_classification"),
}


def public_model(architecture: str, **fields):
    """A random `transformers` model in eval mode, LayerNorms and biases random too so no mapping mistake hides."""
    model_type, _ = ARCHITECTURES[architecture]
    config = PUBLIC_CONFIGS[model_type]()
    for name, value in fields.items():
        setattr(config, name, value)
    if architecture.endswith(("QuestionAnswering", "AlbertForPreTraining")):
        config.num_labels = 2  # span start and end; ALBERT's sentence-order head is sized by num_labels
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad:  # Marian's sinusoid is frozen: it is computed, not stored
                    base = 1.0 if isinstance(module, torch.nn.LayerNorm) and name == "weight" else 0.0
                    p.copy_(base + 0.2 * torch.randn_like(p))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.2 * torch.randn_like(model.final_logits_bias))
    return model


def zoo_params(model):
    """Random params of zoo's shapes, as far from their init as `public_model`'s so no mapping mistake hides."""
    return random_params(model, *zoo.registry.example_inputs(model), seed=1, scale=0.2)["params"]


def batch(model_type: str, seed=0):
    """Two rows, the second padded (with RoBERTa's pad id 1, which its positions count past); token types for
    BERT/ALBERT; decoder inputs (padded too) for Marian; for BART </s> ends each row (its pad id is 1) and the decoder
    inputs are as long as the source (its classifier reads the decoder state at the source's last </s>)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[1, 4:] = 1 if model_type in ("roberta", "xlm-roberta") else 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model_type in ("bert", "albert"):
        inputs["token_type_ids"] = (np.arange(7)[None] >= 3).astype(ids.dtype).repeat(2, 0)
    if model_type == "marian":
        inputs["decoder_input_ids"] = rng.integers(3, 99, (2, 5))
        inputs["decoder_attention_mask"] = np.array([[1] * 5, [1, 1, 1, 0, 0]])
    if model_type == "bart":
        ids[0, 6], ids[1, 3], ids[1, 4:] = 2, 2, 1
        inputs["decoder_input_ids"] = rng.integers(3, 99, (2, 7))
        inputs["decoder_attention_mask"] = np.array([[1] * 7, [1] * 5 + [0] * 2])
    return inputs


def labels(task, inputs, seed=0, order_label="next_sentence_label"):
    rng = np.random.default_rng(seed + 10)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    masked = np.where((rng.random(ids.shape) < 0.5) & (mask == 1), ids, -100)  # MLM: ignored positions are -100
    return {
        None: {},
        "encoder": {},  # an encoder-decoder's encoder alone (T5EncoderModel)
        "mlm": {"labels": masked},
        "pretraining": {"labels": masked, order_label: np.array([0, 1])},  # ALBERT: sentence_order_label
        "sequence_classification": {"labels": np.array([2, 0])},
        "token_classification": {"labels": np.where(mask == 1, rng.integers(0, 3, ids.shape), -100)},
        "question_answering": {"start_positions": np.array([1, 3]), "end_positions": np.array([4, 2])},
        "causal_lm": {"labels": np.where(mask == 1, ids, -100)},
        "seq2seq": {"labels": np.where(inputs.get("decoder_attention_mask", mask) == 1,
                                       inputs.get("decoder_input_ids", ids), -100)},
    }[task]


def cross_entropy(logits, targets):
    """Mean negative log-likelihood over the targets that are not -100."""
    keep = targets != -100
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
    nll = -jnp.take_along_axis(log_probs, jnp.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.sum(keep)


def zoo_loss(task, out, y):
    if task in ("mlm", "token_classification", "sequence_classification", "seq2seq"):
        return cross_entropy(out.logits, y["labels"])
    if task == "pretraining":
        return (cross_entropy(out.prediction_logits, y["labels"])
                + cross_entropy(out.seq_relationship_logits, y["order"]))
    if task == "question_answering":
        return (cross_entropy(out.start_logits, y["start_positions"])
                + cross_entropy(out.end_logits, y["end_positions"])) / 2
    if task == "causal_lm":  # the logits at t predict the token at t + 1
        return cross_entropy(out.logits[:, :-1], y["labels"][:, 1:])
    return None


def zoo_outputs(model, params, inputs, task):
    fields = ("input_ids", "decoder_input_ids", "attention_mask", "decoder_attention_mask") \
        if model.config.is_encoder_decoder else ("input_ids", "attention_mask", "token_type_ids")
    args = {k: inputs[k] for k in fields if k in inputs}
    y = labels(task, inputs, order_label="order")

    @jax.jit  # the loss too: eager, each of its operations would compile a program for every new shape
    def outputs_and_loss(params, args, y):
        out = model.apply({"params": params}, **args)
        return out, zoo_loss(task, out, y) if y else None

    out, loss = outputs_and_loss(params, args, y)
    results = {k: np.asarray(v) for k, v in vars(out).items() if v is not None}
    if loss is not None:
        results["loss"] = np.asarray(loss)
    return results


def torch_outputs(model, inputs, task):
    order_label = "sentence_order_label" if model.config.model_type == "albert" else "next_sentence_label"
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in {**inputs, **labels(task, inputs, order_label=order_label)
                                                          }.items()}, output_hidden_states=True)
    results = {k: v.numpy() for k, v in out.items() if torch.is_tensor(v)}
    if "sop_logits" in results:
        results["seq_relationship_logits"] = results.pop("sop_logits")
    hidden = out.get("decoder_hidden_states") or out.get("hidden_states")
    results.setdefault("last_hidden_state", hidden[-1].numpy())
    if "pooler_output" in results:
        results["pooled_output"] = results.pop("pooler_output")
    return results


def assert_outputs_close(zoo_results, torch_results, diffs=None):
    shared = set(zoo_results) & set(torch_results)
    assert set(zoo_results) - {"pooled_output"} <= shared, f"torch lacks {set(zoo_results) - shared}"
    for name in sorted(shared):
        chex.assert_trees_all_close(zoo_results[name], torch_results[name], atol=1e-5, rtol=1e-5, custom_message=name)
        if diffs is not None:
            diffs[name] = float(np.max(np.abs(zoo_results[name] - torch_results[name])))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_public_checkpoint_gives_the_outputs_and_loss_of_transformers(architecture, tmp_path):
    model_type, task = ARCHITECTURES[architecture]
    reference = public_model(architecture)
    reference.save_pretrained(tmp_path)
    model, params = zoo.from_pretrained(tmp_path)
    assert model.task == task
    inputs = batch(model_type)
    diffs = {}
    assert_outputs_close(zoo_outputs(model, params, inputs, task), torch_outputs(reference, inputs, task), diffs)
    print(architecture, "torch -> zoo max |diff|", diffs)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saved_params_load_in_transformers_with_no_missing_keys_and_equal_outputs(architecture, tmp_path):
    model_type, task = ARCHITECTURES[architecture]
    public_model(architecture).save_pretrained(tmp_path / "public")
    model, _ = zoo.from_pretrained(tmp_path / "public")
    params = zoo_params(model)
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    reference, info = getattr(transformers, architecture).from_pretrained(tmp_path / "zoo", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    inputs = batch(model_type)
    diffs = {}
    assert_outputs_close(zoo_outputs(model, params, inputs, task), torch_outputs(reference.eval(), inputs, task),
                         diffs)
    print(architecture, "zoo -> torch max |diff|", diffs)


@pytest.mark.parametrize("architecture", ["GPT2LMHeadModel", "BertForMaskedLM", "AlbertForPreTraining",
                                          "RobertaForMaskedLM", "DistilBertForMaskedLM"])
def test_untied_output_projection_round_trips(architecture, tmp_path):
    model_type, task = ARCHITECTURES[architecture]
    reference = public_model(architecture, tie_word_embeddings=False)
    reference.save_pretrained(tmp_path / "public")
    model, params = zoo.from_pretrained(tmp_path / "public")
    assert not model.config.tie_word_embeddings
    inputs = batch(model_type)
    assert_outputs_close(zoo_outputs(model, params, inputs, task), torch_outputs(reference, inputs, task))
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    _, info = getattr(transformers, architecture).from_pretrained(tmp_path / "zoo", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())


def saved(folder, preset="bert-tiny", task=None, **overrides):
    """A zoo checkpoint of random params in the public layout (no torch needed); returns (model, params)."""
    model = zoo.create(preset, task=task, **overrides)
    params = zoo_params(model)
    zoo.save_pretrained(model, params, folder)
    return model, params


def edit_config(folder, **fields):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **fields}))


def edit_tensors(folder, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_folder_with_only_pickled_weights_is_refused_with_how_to_convert(tmp_path):
    public_model("BertModel").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(99, 32)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*never unpickles.*save_pretrained"):
        zoo.from_pretrained(tmp_path)


def test_missing_tensor_is_named_with_its_shape(tmp_path):
    saved(tmp_path)
    edit_tensors(tmp_path, lambda t: t.pop("encoder.layer.1.attention.self.key.weight"))
    with pytest.raises(ValueError, match=r"missing tensors.*bert\.encoder\.layer\.1\.attention\.self\.key\.weight "
                                         r"\(64, 64\)"):
        zoo.from_pretrained(tmp_path)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, intermediate_size=100)
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.bias has shape \(128,\) "
                                         r"in the checkpoint but zoo expects \(100,\)"):
        zoo.from_pretrained(tmp_path)


def test_unknown_tensor_is_named(tmp_path):
    saved(tmp_path)
    rotary = "encoder.layer.0.attention.self.rotary.weight"
    edit_tensors(tmp_path, lambda t: t.update({rotary: np.zeros(4, np.float32)}))
    with pytest.raises(ValueError, match=r"unexpected tensors.*bert\.encoder\.layer\.0\.attention\.self\.rotary"):
        zoo.from_pretrained(tmp_path)


@pytest.mark.parametrize("preset, field, value", [
    ("bert-tiny", "position_embedding_type", "relative_key"),
    ("bert-tiny", "hidden_act", "tanh"),
    ("albert-tiny", "num_hidden_groups", 2),
    ("roberta-tiny", "is_decoder", True),
    ("distilbert-tiny", "activation", "tanh"),
    ("gpt-tiny", "scale_attn_by_inverse_layer_idx", True),
    ("transformer-tiny", "normalize_before", True),
    ("transformer-tiny", "decoder_ffn_dim", 64),
    ("transformer-tiny", "tie_word_embeddings", False),
])
def test_config_field_zoo_cannot_honour_is_a_named_error(preset, field, value, tmp_path):
    saved(tmp_path, preset, lm_head_bias=preset == "transformer-tiny", layer_norm_eps=1e-5 if preset ==
          "transformer-tiny" else zoo.get_config(preset).layer_norm_eps)
    edit_config(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=field):
        zoo.from_pretrained(tmp_path)


def test_unsupported_architecture_is_named_and_its_body_still_loads_with_a_task(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, architectures=["BertForMultipleChoice"])
    with pytest.raises(ValueError, match="BertForMultipleChoice"):
        zoo.from_pretrained(tmp_path)
    model, _ = zoo.from_pretrained(tmp_path, task=None)
    assert model.task is None


def test_config_switch_the_public_format_cannot_express_is_a_named_error(tmp_path):
    model = zoo.create("gpt-tiny", norm_position="post")
    with pytest.raises(ValueError, match="norm_position='post'"):
        zoo.save_pretrained(model, zoo_params(model), tmp_path)


def test_base_checkpoint_into_a_task_model_initializes_the_head_and_says_so(tmp_path, caplog):
    _, params = saved(tmp_path / "base", "bert-tiny")
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoints"):
        model, loaded = zoo.from_pretrained(tmp_path / "base", task="sequence_classification", num_labels=5)
    assert "initialized" in caplog.text and "classifier/kernel" in caplog.text
    chex.assert_shape(loaded["classifier"]["kernel"], (64, 5))
    chex.assert_trees_all_close({k: v for k, v in loaded.items() if k != "classifier"}, params)


def test_layer_norm_gamma_and_beta_of_the_original_bert_files_are_read(tmp_path):
    _, params = saved(tmp_path)
    edit_tensors(tmp_path, lambda t: t.update({k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"): t.pop(k) for k in list(t) if "LayerNorm" in k}))
    _, loaded = zoo.from_pretrained(tmp_path)
    chex.assert_trees_all_equal(loaded, params)


def test_opus_mt_config_with_its_legacy_fields_loads(tmp_path, caplog):
    saved(tmp_path, "transformer-tiny", task="seq2seq", lm_head_bias=True, layer_norm_eps=1e-5)
    edit_config(tmp_path, _num_labels=3, add_bias_logits=False, add_final_layer_norm=False, normalize_before=False,
                normalize_embedding=False, static_position_embeddings=True, extra_pos_embeddings=1024, num_beams=4,
                max_length=512, bad_words_ids=[[0]], classif_dropout=0.0, id2label={"0": "A", "1": "B", "2": "C"},
                num_hidden_layers=2, activation_function="swish", scale_embedding=True)
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoints"):
        model, _ = zoo.from_pretrained(tmp_path)
    assert "not used by zoo" not in caplog.text
    assert (model.config.activation, model.config.scale_embeddings, model.task) == ("swish", True, "seq2seq")


def test_compute_dtype_and_config_overrides_apply_while_params_stay_float32(tmp_path):
    saved(tmp_path, "gpt-tiny")
    model, params = zoo.from_pretrained(tmp_path, dtype="bfloat16", remat="full")
    assert (model.config.dtype, model.config.remat) == (jnp.bfloat16, "full")
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}


def test_other_heads_tensors_are_dropped_and_logged(tmp_path, caplog):
    saved(tmp_path, "bert-tiny", task="pretraining")
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoints"):
        model, params = zoo.from_pretrained(tmp_path, task=None)
    assert "not used by this task" in caplog.text and "cls.seq_relationship.weight" in caplog.text
    assert set(params) == {"token_embedding", "embeddings", "encoder", "pooler"}


def test_a_table_an_override_switches_off_is_dropped_and_logged_and_the_rest_loads(tmp_path, caplog):
    """position_embedding="none" on a checkpoint with a position table (an ablation of a pretrained encoder): the
    table is dropped, every other tensor loads, and the model no longer sees the order of its tokens."""
    saved(tmp_path, "bert-tiny", task="sequence_classification", num_labels=2)
    _, with_positions = zoo.from_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoints"):
        model, params = zoo.from_pretrained(tmp_path, position_embedding="none")
    assert "not used by this task and config" in caplog.text and "position_embeddings.weight" in caplog.text
    assert "position_embedding" not in params["embeddings"]
    chex.assert_trees_all_equal(params["encoder"], with_positions["encoder"])
    ids = jnp.array([[2, 10, 11, 12, 13, 3]])
    swapped = jnp.array([[2, 12, 11, 10, 13, 3]])  # two words swapped: the same bag of tokens
    logits = [model.apply({"params": params}, x, jnp.ones_like(x)).logits for x in (ids, swapped)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)


def test_scanned_layers_load_and_save_like_unrolled_ones(tmp_path):
    saved(tmp_path / "unrolled", "gpt-tiny", task="causal_lm")
    unrolled, unrolled_params = zoo.from_pretrained(tmp_path / "unrolled")
    scanned, scanned_params = zoo.from_pretrained(tmp_path / "unrolled", scan_layers=True)
    chex.assert_shape(scanned_params["encoder"]["layers"]["attention"]["qkv"]["kernel"], (2, 64, 3, 4, 16))
    ids = jnp.asarray(batch("gpt2")["input_ids"])
    chex.assert_trees_all_close(jitted_apply(scanned)({"params": scanned_params}, ids).logits,
                                jitted_apply(unrolled)({"params": unrolled_params}, ids).logits, atol=1e-5)
    zoo.save_pretrained(scanned, scanned_params, tmp_path / "scanned")
    chex.assert_trees_all_equal(load_file(tmp_path / "scanned" / "model.safetensors"),
                                load_file(tmp_path / "unrolled" / "model.safetensors"))


def test_sharded_checkpoint_round_trips_through_transformers(tmp_path):
    model, params = saved(tmp_path / "one")
    zoo.save_pretrained(model, params, tmp_path / "shards", max_shard_size=100_000)
    index = json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _, info = transformers.BertModel.from_pretrained(tmp_path / "shards", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    _, loaded = zoo.from_pretrained(tmp_path / "shards")
    chex.assert_trees_all_equal(loaded, params)


def test_bfloat16_checkpoint_loads_into_float32_params(tmp_path):
    reference = public_model("GPT2Model").to(torch.bfloat16)
    reference.save_pretrained(tmp_path)
    _, params = zoo.from_pretrained(tmp_path)
    wte = reference.wte.weight.detach().float().numpy()
    assert params["token_embedding"]["embedding"].dtype == jnp.float32
    chex.assert_trees_all_equal(np.asarray(params["token_embedding"]["embedding"]), wte)


def test_each_parameter_is_placed_on_the_sharding_given(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    by_vocab = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("model", None))
    saved(tmp_path, "gpt-tiny")
    _, params = zoo.from_pretrained(
        tmp_path, shardings=lambda path, shape: by_vocab if path == "token_embedding/embedding" else replicated)
    assert params["token_embedding"]["embedding"].sharding == by_vocab
    assert params["final_norm"]["scale"].sharding == replicated
    tree = jax.tree.map(lambda _: replicated, params)
    _, params = zoo.from_pretrained(tmp_path, shardings=tree)
    assert all(x.sharding == replicated for x in jax.tree.leaves(params))


SHARDED_LOAD = """
import flax.linen as nn, jax, numpy as np, sys, zoo
from tests.model_helpers import random_params
model = zoo.create("gpt-tiny", task="causal_lm")
params = random_params(model, *zoo.registry.example_inputs(model), scale=1.0)["params"]
zoo.save_pretrained(model, params, sys.argv[1])
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
rules = (("vocab", "model"), ("mlp", "model"), ("heads", "model"))
abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *zoo.registry.example_inputs(model)))["params"]
shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
_, loaded = zoo.from_pretrained(sys.argv[1], shardings=shardings)
embedding = loaded["token_embedding"]["embedding"]
assert len(jax.devices()) == 2 and embedding.sharding.spec == jax.sharding.PartitionSpec("model", None)
assert {s.data.shape for s in embedding.addressable_shards} == {(512, 64)}
assert loaded["encoder"]["layers_0"]["attention"]["qkv"]["kernel"].sharding.spec[2] == "model"
jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), params)
print("ok")
"""


def test_parameters_land_sharded_over_a_two_device_mesh_by_logical_axis_rules(tmp_path):
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED_LOAD, str(tmp_path)], env=env, capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def slices_read(monkeypatch) -> list:
    """The host arrays loads make from here on: the slices `_Slices` reads out of the memory-mapped files (views,
    not copies, until then)."""
    made = []
    read = zoo.checkpoints._Slices.__getitem__
    monkeypatch.setattr(zoo.checkpoints._Slices, "__getitem__", lambda self, index: made.append(
        read(self, index)) or made[-1])
    return made


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_sharded_load_reads_each_devices_slice_and_never_holds_a_whole_weight_on_the_host(tmp_path, monkeypatch,
                                                                                              scan_layers):
    # The host arrays a load makes are the slices `_Slices` reads out of the memory-mapped file (views, not copies,
    # until then); on CPU jax may keep them as the device buffers, so their sizes are what the host ever holds.
    made = slices_read(monkeypatch)
    # the token embedding (8 MB in float32) is the largest weight; fused q/k/v and scanned layers are sliced too
    sizes = dict(vocab_size=16384, hidden_size=128, num_heads=8)
    model = zoo.create("bert-tiny", task="mlm", **sizes)
    params = random_params(model, *zoo.registry.example_inputs(model), scale=1.0)["params"]
    zoo.save_pretrained(model, params, tmp_path)
    embedding_bytes = 16384 * 128 * 4
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tensor"))
    rules = (("vocab", "fsdp"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"), ("layers", None))
    loaded_model = zoo.create("bert-tiny", task="mlm", scan_layers=scan_layers, **sizes)
    abstract = jax.eval_shape(lambda: loaded_model.init(jax.random.key(0),
                                                        *zoo.registry.example_inputs(loaded_model)))["params"]
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)

    _, sharded = zoo.from_pretrained(tmp_path, scan_layers=scan_layers, shardings=shardings)
    assert len(sharded["token_embedding"]["embedding"].addressable_shards) == 8
    assert max(a.nbytes for a in made) == embedding_bytes // 4
    made.clear()
    _, whole = zoo.from_pretrained(tmp_path, scan_layers=scan_layers)
    assert max(a.nbytes for a in made) == embedding_bytes  # unsharded, a weight is read whole (one at a time)
    chex.assert_trees_all_equal(jax.device_get(sharded), jax.device_get(whole))
    np.testing.assert_array_equal(np.asarray(whole["token_embedding"]["embedding"]),
                                  np.asarray(params["token_embedding"]["embedding"]))
    qkv = sharded["encoder"]["layers" if scan_layers else "layers_0"]["attention"]["qkv"]["kernel"]
    assert qkv.sharding.spec[-2] == "tensor"  # fused q/k/v sliced by head across the stacked names


def test_loaded_params_do_not_change_when_their_file_is_overwritten(tmp_path):
    # the loader reads through memory maps, and jax may keep host memory it is given: params must own their memory
    model, _ = saved(tmp_path, "gpt-tiny")
    _, params = zoo.from_pretrained(tmp_path)
    before = jax.device_get(params)
    zoo.save_pretrained(model, jax.tree.map(lambda x: x + 1, before), tmp_path)
    chex.assert_trees_all_equal(jax.device_get(params), before)


def test_a_grouped_query_llama_loads_sharded_over_fsdp_and_tensor_axes_slice_by_slice(tmp_path, monkeypatch):
    made = slices_read(monkeypatch)
    sizes = dict(vocab_size=4096, hidden_size=64, num_heads=4, num_kv_heads=2)
    model = zoo.create("llama-tiny", task="causal_lm", **sizes)
    params = random_params(model, *zoo.registry.example_inputs(model), scale=1.0)["params"]
    zoo.save_pretrained(model, params, tmp_path)
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tensor"))
    rules = (("vocab", "fsdp"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *zoo.registry.example_inputs(model)))["params"]
    _, sharded = zoo.from_pretrained(tmp_path, shardings=nn.logical_to_mesh_sharding(
        nn.get_partition_spec(abstract), mesh, rules))
    key_value = sharded["encoder"]["layers_0"]["attention"]["key_value"]["kernel"]  # [E, 2, kv_heads, head_dim]
    assert {s.data.shape for s in key_value.addressable_shards} == {(16, 2, 1, 16)}
    assert max(a.nbytes for a in made) == 4096 * 64 * 4 // 4  # a quarter of an embedding table, the largest
    chex.assert_trees_all_equal(jax.device_get(sharded), params)


def test_a_bfloat16_checkpoint_is_read_as_bfloat16_without_a_float32_copy(tmp_path, monkeypatch):
    made = slices_read(monkeypatch)
    model = zoo.create("llama-tiny", task="causal_lm", param_dtype="bfloat16")
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), random_params(
        model, *zoo.registry.example_inputs(model), scale=1.0)["params"])
    zoo.save_pretrained(model, params, tmp_path)
    _, loaded = zoo.from_pretrained(tmp_path, param_dtype="bfloat16")
    assert made and {a.dtype for a in made} == {jnp.dtype(jnp.bfloat16)}
    chex.assert_trees_all_equal(jax.device_get(loaded), jax.device_get(params))


def test_label_names_are_written_as_id2label_and_read_back(tmp_path):
    """A classifier's class names travel in config.json's id2label, as transformers writes and reads them."""
    names = ("O", "B-CODE", "I-CODE")
    model = zoo.create("bert-tiny", task="token_classification", num_labels=3, label_names=names)
    zoo.save_pretrained(model, zoo_params(model), tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["id2label"] == {"0": "O", "1": "B-CODE", "2": "I-CODE"} and written["label2id"]["I-CODE"] == 2
    assert transformers.AutoConfig.from_pretrained(tmp_path).id2label == dict(enumerate(names))
    loaded, _ = zoo.from_pretrained(tmp_path)
    assert loaded.config.label_names == names
    with pytest.raises(ValueError, match="label_names names 2 classes but num_labels=3"):
        zoo.create("bert-tiny", task="token_classification", num_labels=3, label_names=("O", "B"))
