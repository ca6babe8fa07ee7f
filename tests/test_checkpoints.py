"""Public checkpoints both ways: every architecture's outputs and losses equal PyTorch `transformers` after loading its
safetensors into zoo, and after saving zoo's params and loading them into `transformers`."""

import json
import logging

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64,
                                            bos_token_id=1, eos_token_id=2),
    "marian": lambda: transformers.MarianConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                                decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
                                                scale_embedding=True, activation_function="swish", pad_token_id=0,
                                                eos_token_id=1, decoder_start_token_id=0, **TINY),
}
ARCHITECTURES = {
    "GPT2Model": ("gpt2", None), "GPT2LMHeadModel": ("gpt2", "causal_lm"),
    "MarianModel": ("marian", None), "MarianMTModel": ("marian", "seq2seq"),
}


def public_model(architecture: str):
    """A random `transformers` model in eval mode, LayerNorms and biases random too so no mapping mistake hides."""
    model_type, _ = ARCHITECTURES[architecture]
    model = getattr(transformers, architecture)(PUBLIC_CONFIGS[model_type]()).eval()
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad:  # Marian's sinusoid is frozen: it is computed, not stored
                    base = 1.0 if isinstance(module, torch.nn.LayerNorm) and name == "weight" else 0.0
                    p.copy_(base + 0.2 * torch.randn_like(p))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.2 * torch.randn_like(model.final_logits_bias))
    return model


def random_params(model, seed=1):
    """Random params of zoo's shapes (numpy: no init to compile); norm scales near 1, everything else near 0."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *zoo.registry.example_inputs(model)))["params"]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray((path[-1].key == "scale") + 0.2 * rng.standard_normal(x.shape), jnp.float32),
        nn.unbox(shapes))


def batch(model_type: str, seed=0):
    """Two rows, the second padded; token types for BERT/ALBERT; decoder inputs (padded too) for Marian."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[1, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model_type in ("bert", "albert"):
        inputs["token_type_ids"] = (np.arange(7)[None] >= 3).astype(ids.dtype).repeat(2, 0)
    if model_type == "marian":
        inputs["decoder_input_ids"] = rng.integers(3, 99, (2, 5))
        inputs["decoder_attention_mask"] = np.array([[1] * 5, [1, 1, 1, 0, 0]])
    return inputs


def labels(task, inputs, seed=0):
    rng = np.random.default_rng(seed + 10)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    masked = np.where((rng.random(ids.shape) < 0.5) & (mask == 1), ids, -100)  # MLM: ignored positions are -100
    return {
        None: {},
        "mlm": {"labels": masked},
        "pretraining": {"labels": masked, "next_sentence_label": np.array([0, 1])},
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
                + cross_entropy(out.seq_relationship_logits, y["next_sentence_label"]))
    if task == "question_answering":
        return (cross_entropy(out.start_logits, y["start_positions"])
                + cross_entropy(out.end_logits, y["end_positions"])) / 2
    if task == "causal_lm":  # the logits at t predict the token at t + 1
        return cross_entropy(out.logits[:, :-1], y["labels"][:, 1:])
    return None


def zoo_outputs(model, params, inputs, task):
    fields = ("input_ids", "decoder_input_ids", "attention_mask", "decoder_attention_mask") \
        if model.config.is_encoder_decoder else ("input_ids", "attention_mask", "token_type_ids")
    args = {k: jnp.asarray(inputs[k]) for k in fields if k in inputs}
    out = jax.jit(lambda p, a: model.apply({"params": p}, **a))(params, args)
    results = {k: np.asarray(v) for k, v in vars(out).items() if v is not None}
    y = labels(task, inputs)
    if y:
        results["loss"] = np.asarray(zoo_loss(task, out, {k: jnp.asarray(v) for k, v in y.items()}))
    return results


def torch_outputs(model, inputs, task):
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in {**inputs, **labels(task, inputs)}.items()},
                    output_hidden_states=True)
    results = {k: v.numpy() for k, v in out.items() if torch.is_tensor(v)}
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
    params = random_params(model)
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    reference, info = getattr(transformers, architecture).from_pretrained(tmp_path / "zoo", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    inputs = batch(model_type)
    diffs = {}
    assert_outputs_close(zoo_outputs(model, params, inputs, task), torch_outputs(reference.eval(), inputs, task),
                         diffs)
    print(architecture, "zoo -> torch max |diff|", diffs)
