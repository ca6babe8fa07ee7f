"""T5's switches against their formulas and transformers' PyTorch T5, and the t5 family."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.layers import FeedForward, RMSNorm, relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (16, 7)])
def test_relative_position_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5Attention
    distances = np.arange(-300, 301)
    expected = T5Attention._relative_position_bucket(torch.tensor(distances), bidirectional=bidirectional,
                                                     num_buckets=num_buckets, max_distance=max_distance).numpy()
    got = relative_position_bucket(jnp.asarray(distances), bidirectional=bidirectional, num_buckets=num_buckets,
                                   max_distance=max_distance)
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_rms_norm_equals_the_formula(key):
    cfg = zoo.Config(norm="rms", layer_norm_eps=1e-6, hidden_size=16, num_heads=2)
    x = jax.random.normal(key, (2, 3, 16)) * 3 + 1
    scale = jax.random.normal(jax.random.key(1), (16,))
    got = RMSNorm(cfg).apply({"params": {"scale": scale}}, x)
    expected = x / np.sqrt(np.mean(np.square(x), -1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation, gate", [("gated_gelu", lambda h: jax.nn.gelu(h, approximate=True)),
                                              ("gated_silu", jax.nn.silu)])
def test_gated_feed_forward_equals_the_formula(activation, gate, key):
    cfg = zoo.Config(activation=activation, use_bias=False, hidden_size=8, num_heads=2, intermediate_size=12)
    x = jax.random.normal(key, (2, 3, 8))
    params = nn.unbox(FeedForward(cfg).init(jax.random.key(1), x, deterministic=True))["params"]
    assert set(params) == {"wi_0", "wi_1", "wo"} and set(params["wi_0"]) == {"kernel"}
    got = FeedForward(cfg).apply({"params": params}, x, deterministic=True)
    expected = (gate(x @ params["wi_0"]["kernel"]) * (x @ params["wi_1"]["kernel"])) @ params["wo"]["kernel"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---- the t5 family against transformers' PyTorch T5 ----

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from tests.test_checkpoints import assert_outputs_close, batch, torch_outputs, zoo_outputs  # noqa: E402

VERSIONS = {  # v1.0: ReLU, tied and rescaled; v1.1 / Flan-T5: gated-gelu, untied; d_kv * heads != d_model in v1.1
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True, d_kv=8),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=6),
}
T5_ARCHITECTURES = {"T5Model": None, "T5ForConditionalGeneration": "seq2seq", "T5EncoderModel": "encoder"}


def t5_public_config(version):
    return transformers.T5Config(vocab_size=99, d_model=32, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=4,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=12,
                                 decoder_start_token_id=0, **VERSIONS[version])


def t5_public_model(architecture, version):
    config = t5_public_config(version)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "layer_norm" in name else 0.0
            # T5 has no 1/sqrt(d_kv) in attention: its init folds it into the query weights, and so does this sample
            # (unscaled, float32 itself strays 2e-5 from float64 on some draws)
            p.copy_(base + 0.2 * (config.d_kv ** -0.5 if name.endswith(".q.weight") else 1.0) * torch.randn_like(p))
        if version == "v1.1" and hasattr(model, "lm_head"):  # transformers 5 ties T5's lm_head always: untie it
            model.lm_head.weight = torch.nn.Parameter(0.2 * torch.randn_like(model.lm_head.weight))
    return model


def t5_batch(architecture):
    inputs = batch("marian")
    inputs["input_ids"] = inputs["input_ids"] * inputs["attention_mask"]
    if architecture == "T5EncoderModel":
        del inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
    return inputs


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("architecture", T5_ARCHITECTURES)
def test_t5_checkpoints_both_ways_give_the_outputs_and_loss_of_transformers(architecture, version, tmp_path):
    task = T5_ARCHITECTURES[architecture]
    inputs = t5_batch(architecture)
    # transformers -> zoo
    reference = t5_public_model(architecture, version)
    if version == "v1.1" and task == "seq2seq":  # save the untied head as a real v1.1 file has it
        reference.config.tie_word_embeddings = False
    reference.save_pretrained(tmp_path / "hf")
    model, params = zoo.from_pretrained(tmp_path / "hf")
    assert model.config.family == "t5" and model.task == task
    if task == "seq2seq":  # v1.0 tied and rescaled, v1.1 untied
        assert model.config.tie_word_embeddings == model.config.scale_tied_logits == (version == "v1.0")
    expected = torch_outputs(reference, inputs, task)
    assert_outputs_close(zoo_outputs(model, params, inputs, task), expected)
    # zoo -> transformers
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    loaded, info = getattr(transformers, architecture).from_pretrained(tmp_path / "zoo", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert_outputs_close(zoo_outputs(model, params, inputs, task), torch_outputs(loaded.eval(), inputs, task))


@pytest.mark.parametrize("version", VERSIONS)
def test_t5_kv_cache_decoding_equals_the_full_forward_pass(version, tmp_path):
    from tests.model_helpers import jitted_apply
    t5_public_model("T5ForConditionalGeneration", version).save_pretrained(tmp_path)
    model, params = zoo.from_pretrained(tmp_path)
    inputs = t5_batch("T5ForConditionalGeneration")
    src, src_mask, tgt = (jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "decoder_input_ids"))
    variables = {"params": params}
    full = jitted_apply(model)(variables, src, tgt, attention_mask=src_mask).logits
    encoded = jitted_apply(model, method="encode")(variables, src, src_mask)
    step = jitted_apply(model, method="decode", decode=True, mutable=["cache"])
    cache = zoo.init_cache(model, 2, tgt.shape[1], source_length=src.shape[1])
    logits = []
    for t in range(tgt.shape[1]):
        out, mutated = step({**variables, "cache": cache}, tgt[:, t:t + 1], encoded if t == 0 else None, src_mask)
        cache = mutated["cache"]
        logits.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(logits, axis=1), full, atol=1e-5, rtol=1e-5)


from tests.test_generate import HF_SEARCHES, assert_generation_equals_transformers, eos_candidate, hf  # noqa: E402,F401
from tests.test_generate import padded_batch, public_model  # noqa: E402


@pytest.fixture(scope="module", params=list(VERSIONS))
def t5_pair(request, hf, tmp_path_factory):
    config = t5_public_config(request.param)
    # transformers' generate sizes its cache by num_layers: give the decoder as many layers as the encoder
    config.vocab_size, config.eos_token_id, config.num_decoder_layers = 99, 1, config.num_layers
    # T5 folds 1/sqrt(d) into its weights: small attention weights keep the random decoder from repeating a token
    jitter = lambda name, p: 0.0 if p.ndim < 2 else 0.3 if "SelfAttention" in name or "EncDec" in name else 1.0
    return public_model(hf, "T5ForConditionalGeneration", config, tmp_path_factory.mktemp("t5"), jitter)


@pytest.mark.parametrize("search", HF_SEARCHES, ids=["greedy", "beam4", "beam4-early-penalty"])
def test_t5_generation_equals_transformers(search, hf, t5_pair):
    # T5's pad id 0 is its decoder start; as the generation's pad, transformers' beam search (0 is falsy) fills ended
    # rows with EOS instead, so the rows are padded with another id here (pad is suppressed either way)
    ids, mask = padded_batch(2, 7, [7, 5, 3], pad=98, left=False)
    assert_generation_equals_transformers(hf, t5_pair, ids, mask, search, pad=98, decoder_start_token_id=0,
                                          eos_from=lambda sequences: eos_candidate(sequences, 2, rarest=True),
                                          suppress_frequent=True)


def test_the_encoder_only_task_has_no_decoder_and_an_unknown_task_is_named():
    model = zoo.create("t5-tiny", task="encoder")
    ids = jnp.ones((1, 4), jnp.int32)
    params = model.init(jax.random.key(0), ids)["params"]
    assert set(params) == {"token_embedding", "encoder", "encoder_norm"}
    with pytest.raises(ValueError, match="runs the encoder stack only: it takes no decoder_input_ids"):
        model.apply({"params": params}, ids, ids)
    with pytest.raises(ValueError, match="is the encoder stack alone: it has no decoder to run"):
        model.apply({"params": params}, ids, None, method=model.decode)
    bad = zoo.EncoderDecoderTransformer(zoo.get_config("t5-tiny"), task="question_answering")
    with pytest.raises(ValueError, match="unknown task 'question_answering' for an encoder-decoder; known: "):
        bad.init(jax.random.key(0), ids, ids)


def test_dropout_inside_the_feed_forward_drops_activations_and_rescales_the_rest(key):
    # wo has a left inverse (intermediate < hidden), so the dropped activations can be read back from the output
    cfg = zoo.get_config("t5-tiny").replace(hidden_size=16, intermediate_size=8, activation_dropout_rate=0.5)
    x = jax.random.normal(key, (2, 5, 16))
    ff = FeedForward(cfg)
    params = nn.unbox(ff.init(jax.random.key(1), x, deterministic=True)["params"])
    out = ff.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    hidden = jax.nn.relu(x @ params["wi"]["kernel"])
    seen = out @ jnp.linalg.pinv(params["wo"]["kernel"])  # = hidden * keep / (1 - rate)
    dropped = np.isclose(seen, 0.0, atol=1e-4) & ~np.isclose(hidden, 0.0, atol=1e-4)
    np.testing.assert_allclose(np.where(dropped, 0.0, seen), np.where(dropped, 0.0, 2 * hidden), atol=1e-4)
    assert 0.25 < dropped.sum() / (~np.isclose(hidden, 0.0, atol=1e-4)).sum() < 0.75
    np.testing.assert_allclose(ff.apply({"params": params}, x, deterministic=True), hidden @ params["wo"]["kernel"],
                               atol=1e-5)


@pytest.mark.parametrize("final_norm_dropout", [True, False])
def test_t5_drops_out_the_final_norms_output(final_norm_dropout):
    model = zoo.create("t5-tiny", task="encoder", dropout_rate=0.5, final_norm_dropout=final_norm_dropout)
    ids = jnp.arange(2 * 12).reshape(2, 12) % 50 + 2
    params = model.init(jax.random.key(0), ids)["params"]
    out = model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.key(1)})
    # without it, an output is exactly 0 only where every residual branch of that feature was dropped (1 in 32)
    zeros = float(jnp.mean(out.last_hidden_state == 0))
    assert (0.4 < zeros < 0.65) if final_norm_dropout else zeros < 0.1
    with pytest.raises(ValueError, match="final_norm_dropout=True drops out the final norm's output: it needs "
                                         "final_norm=True"):
        zoo.get_config("bert-tiny").replace(final_norm_dropout=True)
