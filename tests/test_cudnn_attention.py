"""attention_kernel="cudnn": cuDNN's fused flash attention against the portable XLA path.

The config and backend errors run everywhere; the kernel itself only on a GPU (CI has none: these ran on an H100/H200,
see the README's measured numbers).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.model_helpers import jitted_apply, random_params
from zoo.attention import attend, xla_attention
from zoo.config import Config
from zoo.masks import AttentionMask

on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN's kernel needs an NVIDIA GPU")
CUDNN = dict(attention_kernel="cudnn", dtype="bfloat16", attention_dropout_rate=0.0)


@pytest.mark.parametrize("overrides, problem", [
    (dict(dtype="float32"), "bfloat16 or float16, not dtype=float32"),
    (dict(attention_dropout_rate=0.1), "set attention_dropout_rate=0"),
    (dict(num_heads=12, hidden_size=60), "head_dim must be a multiple of 8, got 5"),
    (dict(attention="block_sparse", causal=True), "no block-sparse pattern"),
    (dict(attention="sliding_window", causal=False), "looks left only"),
    (dict(attention="sliding_window", causal=True, global_tokens=1), "set global_tokens=0"),
])
def test_cudnn_config_errors_name_what_the_kernel_cannot_do(overrides, problem):
    with pytest.raises(ValueError, match="attention_kernel='cudnn' does not fit this config") as error:
        Config(**{**CUDNN, **overrides})
    assert problem in str(error.value)


def test_cudnn_encoder_decoder_takes_dense_attention_only():
    Config(family="transformer", num_decoder_layers=2, **CUDNN)  # dense everywhere: fits
    with pytest.raises(ValueError, match="looks left only"):
        Config(family="transformer", num_decoder_layers=2, attention="sliding_window", causal=True, **CUDNN)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the error is for backends without cuDNN")
def test_cudnn_kernel_off_a_gpu_names_the_backend():
    cfg = Config(num_heads=2, hidden_size=16, **CUDNN)
    q = jnp.zeros((1, 4, 2, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="runs on an NVIDIA GPU, but JAX's backend is 'cpu'"):
        attend(q, q, q, AttentionMask(), cfg, dropout=None, sparse=True)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="off a GPU, reaching cuDNN's kernel is an error")
def test_decoding_takes_the_xla_path_with_the_cudnn_kernel():
    # A decoding step is one query (self- and cross-attention alike): it never reaches cuDNN, so on CPU it runs while
    # a full forward pass names the missing GPU. Its numbers equal those of the same model with the XLA kernel, for
    # the first step (given the encoded source) and a later one (reading the source's keys and values cached).
    cudnn = zoo.create("transformer-tiny", task="seq2seq", **CUDNN)
    xla = zoo.create("transformer-tiny", task="seq2seq", **{**CUDNN, "attention_kernel": "xla"})
    src, tgt = jnp.arange(3, 12).reshape(1, 9), jnp.arange(20, 24).reshape(1, 4)
    variables = random_params(xla, src, tgt)
    with pytest.raises(ValueError, match="runs on an NVIDIA GPU"):
        jax.eval_shape(cudnn.apply, variables, src, tgt)
    encoded = jitted_apply(xla, method="encode")(variables, src)
    cache = zoo.init_cache(cudnn, 1, 4, source_length=9)
    steps = {}
    for name, model in (("cudnn", cudnn), ("xla", xla)):
        decode_step = jitted_apply(model, method="decode", decode=True, mutable=["cache"])
        first, mutated = decode_step({**variables, "cache": cache}, tgt[:, :1], encoded)
        second, _ = decode_step({**variables, **mutated}, tgt[:, 1:2], None)
        steps[name] = (first.logits, second.logits)
    chex.assert_trees_all_equal(steps["cudnn"], steps["xla"])


def bf16_inputs(batch, length, heads=4, head_dim=64, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(k, (batch, length, heads, head_dim)).astype(jnp.bfloat16) for k in keys)


def key_mask_of(padding, batch, length):
    if padding == "none":
        return None
    real = jnp.arange(length) < jnp.array([length, length - 37])[:, None]
    return real if padding == "right" else real[:, ::-1]  # left padding: the real tokens at the end


@on_gpu
@pytest.mark.parametrize("padding", ["none", "right", "left"])
@pytest.mark.parametrize("attention, causal", [("dense", False), ("dense", True), ("sliding_window", True)])
def test_cudnn_attention_equals_the_xla_path(attention, causal, padding):
    # 200 tokens, a window of 24: cuDNN's own tiling, not zoo's blocks of 64, decides what it skips
    cfg = Config(num_heads=4, hidden_size=256, attention=attention, causal=causal, window=24, block_size=64, **CUDNN)
    reference_cfg = cfg.replace(attention_kernel="xla", dtype="float32")
    query, key, value = bf16_inputs(2, 200)
    mask = AttentionMask(key_mask_of(padding, 2, 200), causal=causal)

    def cudnn(query, key, value):
        return attend(query, key, value, mask, cfg, dropout=None, sparse=True)

    def reference(query, key, value):
        f32 = (x.astype(jnp.float32) for x in (query, key, value))
        return xla_attention(*f32, mask, reference_cfg, dropout=None, sparse=True)

    # A query whose window holds only padding has no defined output (cuDNN writes zeros, XLA an average of the
    # padding); models never read padding rows, so compare and differentiate the real ones.
    real = np.ones((2, 200), bool) if mask.key_mask is None else np.asarray(mask.key_mask)

    def output_and_grads(run):
        def weighted_sum(*qkv):  # a loss whose gradient differs at every real output element
            out = run(*qkv).astype(jnp.float32) * real[:, :, None, None]
            return (out * jnp.cos(jnp.arange(out.size).reshape(out.shape))).sum()
        grads = jax.jit(jax.grad(weighted_sum, argnums=(0, 1, 2)))(query, key, value)
        return jax.jit(run)(query, key, value).astype(jnp.float32)[real], [g.astype(jnp.float32) for g in grads]

    assert "__cudnn$fmha" in jax.jit(cudnn).lower(query, key, value).as_text()
    (out, grads), (expected, expected_grads) = output_and_grads(cudnn), output_and_grads(reference)
    # bf16 inputs against a float32 reference: the tolerance is bf16's rounding (2^-8 relative)
    chex.assert_trees_all_close(out, expected, atol=2e-2, rtol=1e-2)
    chex.assert_trees_all_close(grads, expected_grads, atol=5e-2, rtol=2e-2)


@on_gpu
@pytest.mark.parametrize("name, task, overrides", [
    ("gpt2", "causal_lm", dict(attention="sliding_window", window=16)),
    ("bert-base-uncased", "mlm", dict()),
    ("transformer-base", "seq2seq", dict()),
    ("llama-3.2-1b", "causal_lm", dict(num_kv_heads=1)),  # rotary positions, multi-query attention
    ("mistral-7b-v0.1", "causal_lm", dict(num_kv_heads=1, window=16)),  # + the sliding window
])
def test_models_with_the_cudnn_kernel_match_the_xla_kernel(name, task, overrides):
    small = dict(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=256, vocab_size=500, max_length=128,
                 dropout_rate=0.0, **CUDNN, **overrides)
    if task == "seq2seq":
        small["num_decoder_layers"] = 2
    cudnn_model = zoo.create(name, task=task, **small)
    xla_model = zoo.create(name, task=task, **{**small, "attention_kernel": "xla"})
    ids = jax.random.randint(jax.random.key(1), (2, 96), 3, 500)
    mask = (jnp.arange(96) < jnp.array([96, 70])[:, None]).astype(jnp.int32)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if task == "seq2seq":
        inputs.update(decoder_input_ids=ids[:, :40], decoder_attention_mask=mask[:, :40])
    params = xla_model.init(jax.random.key(0), **inputs)
    got = jax.jit(cudnn_model.apply)(params, **inputs).logits.astype(jnp.float32)
    want = jax.jit(xla_model.apply)(params, **inputs).logits.astype(jnp.float32)
    real = np.asarray(mask[:, :got.shape[1]], bool)
    scale = float(np.abs(np.asarray(want)[real]).max())
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=0.03 * scale)
