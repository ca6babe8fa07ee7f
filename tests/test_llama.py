"""Llama, Mistral and Qwen2 on zoo's blocks: rotary positions against their formula and transformers' rotary
embedding, grouped-query attention against multi-head attention, the KV cache, and the three families' checkpoints
and generation against transformers' PyTorch models."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.model_helpers import decode_in_chunks, jitted_apply, random_params
from tests.test_train import make_batch, run_steps
from train.partitioning import make_mesh
from zoo.attention import dot_product_attention
from zoo.config import RopeScaling
from zoo.layers import stack_layer_params
from zoo.rotary import apply_rotary, rotary_embedding, rotary_frequencies

# Published parameter counts: transformers' num_parameters() of the ForCausalLM models (a tied head counted once).
PUBLISHED = {"smollm2-135m": 134_515_008, "tinyllama-1.1b": 1_100_048_384, "llama-3.2-1b": 1_235_814_400,
             "qwen2.5-0.5b": 494_032_768, "mistral-7b-v0.1": 7_241_732_096}
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
SCALINGS = {"default": None, "linear": dict(rope_type="linear", factor=2.5), "llama3": LLAMA3}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_count_equals_published(name):
    assert zoo.param_count(zoo.create(name, task="causal_lm")) == PUBLISHED[name]


def tiny(family="llama", **fields):
    return zoo.get_config(f"{family}-tiny", **fields)


# ---- rotary positions ----

def test_rotary_angles_follow_the_formula():
    cfg = tiny(rope_theta=500.0)
    positions = np.array([[0, 1, 7, 30]])
    cos, sin = rotary_embedding(cfg, jnp.asarray(positions))
    dim = cfg.head_dim
    angles = positions[..., None] * 500.0 ** (-np.arange(0, dim, 2) / dim)
    angles = np.concatenate([angles, angles], axis=-1)
    np.testing.assert_allclose(cos, np.cos(angles), atol=2e-6)
    np.testing.assert_allclose(sin, np.sin(angles), atol=2e-6)


def test_rotated_queries_and_keys_score_by_their_distance_alone(key):
    cfg = tiny()
    q, k = jax.random.normal(key, (2, 1, 1, 1, cfg.head_dim))
    def score(query_position, key_position):
        rotate = lambda x, p: apply_rotary(x, rotary_embedding(cfg, jnp.array([[p]])))
        return float(jnp.sum(rotate(q, query_position) * rotate(k, key_position)))
    np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)
    np.testing.assert_allclose(score(3, 3), float(jnp.sum(q * k)), rtol=1e-5)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_rotary_embedding_equals_transformers(scaling):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    rope = {"rope_type": "default", **(SCALINGS[scaling] or {}), "rope_theta": 50.0}
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=64,
                                      rope_parameters=rope)
    cfg = tiny(hidden_size=64, num_heads=2, num_kv_heads=None, rope_theta=50.0, rope_scaling=SCALINGS[scaling])
    positions = np.array([[0, 3, 9, 17, 40, 63], [5, 6, 7, 8, 9, 10]])
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 32)).astype(np.float32)  # torch: [batch, heads, length, d]
    cos, sin = LlamaRotaryEmbedding(config)(torch.as_tensor(x), torch.as_tensor(positions))
    expected, _ = apply_rotary_pos_emb(torch.as_tensor(x), torch.as_tensor(x), cos, sin)
    ours_cos, ours_sin = rotary_embedding(cfg, jnp.asarray(positions))
    np.testing.assert_allclose(ours_cos, cos.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours_sin, sin.numpy(), atol=1e-6)
    got = apply_rotary(jnp.asarray(x.transpose(0, 2, 1, 3)), (ours_cos, ours_sin))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 2, 1, 3), expected.numpy(), atol=1e-5)
    if scaling != "default":  # the scaling does change something
        assert not np.allclose(rotary_frequencies(cfg), rotary_frequencies(cfg.replace(rope_scaling=None)))


# ---- grouped-query attention and the cache ----

def as_multi_head(params, cfg):
    """GQA params -> the equal multi-head params: each key/value head repeated for the query heads it serves."""
    groups = cfg.num_heads // cfg.kv_heads

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        if "key_value" in tree:
            tree = dict(tree)
            query, key_value = tree.pop("query"), tree.pop("key_value")
            repeated = {k: jnp.repeat(v, groups, axis=-2) for k, v in key_value.items()}  # [..., 2, heads, dim]
            tree["qkv"] = {k: jnp.concatenate([query[k][..., None, :, :], repeated[k]], axis=-3) for k in query}
        return {k: convert(v) for k, v in tree.items()}

    return convert(params)


@pytest.mark.parametrize("family, fields", [
    ("llama", {}), ("qwen2", {}),  # qwen2: with q/k/v biases
    ("mistral", dict(window=3, block_size=4)),  # the sliding window computed block by block
])
def test_grouped_query_attention_equals_multi_head_attention_with_repeated_kv_heads(family, fields):
    cfg = tiny(family, num_heads=4, num_kv_heads=2, **fields)
    model = zoo.Transformer(cfg, "causal_lm")
    ids = np.random.default_rng(0).integers(0, 1024, (2, 9))
    params = random_params(model, ids, scale=0.2)["params"]
    assert params["encoder"]["layers_0"]["attention"]["key_value"]["kernel"].shape == (64, 2, 2, 16)
    mha = zoo.Transformer(cfg.replace(num_kv_heads=None), "causal_lm")
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    got = jitted_apply(model)({"params": params}, ids, mask).logits
    expected = jitted_apply(mha)({"params": as_multi_head(params, cfg)}, ids, mask).logits
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_with_dropout_equals_repeated_kv_heads(key):
    q = jax.random.normal(key, (2, 5, 4, 8))
    k, v = jax.random.normal(jax.random.key(1), (2, 2, 5, 2, 8))
    dropout = nn.Dropout(0.3, deterministic=False)
    def attention(key_, value):
        return dropout.apply({}, None, rngs={"dropout": jax.random.key(2)},
                             method=lambda m, _: dot_product_attention(q, key_, value, None, dropout=m))
    np.testing.assert_allclose(attention(k, v), attention(jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)),
                               atol=1e-6)


def test_scanned_and_rematted_llama_equals_the_unrolled_one():
    unrolled = zoo.Transformer(tiny(rope_scaling=LLAMA3), "causal_lm")
    scanned = zoo.Transformer(unrolled.config.replace(scan_layers=True, remat="full"), "causal_lm")
    tokens = np.random.default_rng(3).integers(0, 1024, (2, 9))
    params = random_params(unrolled, tokens, scale=0.2)["params"]
    stacked = {**params, "encoder": stack_layer_params(params["encoder"], 2)}
    np.testing.assert_allclose(jitted_apply(scanned)({"params": stacked}, tokens).logits,
                               jitted_apply(unrolled)({"params": params}, tokens).logits, atol=1e-5)


def test_the_kv_cache_holds_only_the_kv_heads():
    def cache_bytes(**fields):
        cache = zoo.init_cache(zoo.Transformer(tiny(num_heads=8, **fields), "causal_lm"), 2, 32)
        key = cache["encoder"]["layers_0"]["attention"]["key"]
        return key.shape, sum(x.nbytes for x in jax.tree.leaves(cache) if x.ndim == 4)

    (gqa_shape, gqa), (mha_shape, mha) = cache_bytes(num_kv_heads=2), cache_bytes(num_kv_heads=None)
    assert gqa_shape == (2, 2, 32, 8) and mha_shape == (2, 8, 32, 8)  # [batch, kv_heads, slots, head_dim]
    assert mha == 4 * gqa  # num_heads / num_kv_heads
    (mqa_shape, mqa) = cache_bytes(num_kv_heads=1)
    assert mqa_shape == (2, 1, 32, 8) and mha == 8 * mqa


@pytest.mark.parametrize("family, fields", [
    ("llama", dict(rope_scaling=LLAMA3)),  # GQA + RoPE with llama3 scaling
    ("mistral", dict(window=3)),  # + the sliding window: a rolling cache of 3 slots past a prompt of 4
    ("qwen2", dict(num_kv_heads=1)),  # multi-query
])
def test_kv_cache_decoding_equals_the_full_forward_pass(family, fields):
    model = zoo.Transformer(tiny(family, **fields), "causal_lm")
    tokens = np.random.default_rng(1).integers(0, 1024, (2, 11))
    variables = random_params(model, tokens, scale=0.2)
    full = jitted_apply(model)(variables, tokens).logits
    decoded, cache = decode_in_chunks(model, variables, tokens, [4, 1, 1, 2, 3])
    if family == "mistral":
        assert cache["encoder"]["layers_0"]["attention"]["key"].shape[2] == 3
    np.testing.assert_allclose(decoded, full, atol=1e-5, rtol=1e-5)


def test_packed_rows_with_per_document_positions_equal_each_document_alone():
    model = zoo.Transformer(tiny(), "causal_lm")
    rng = np.random.default_rng(2)
    first, second = rng.integers(0, 1024, (1, 5)), rng.integers(0, 1024, (1, 4))
    variables = random_params(model, first, scale=0.2)
    packed = np.concatenate([first, second], axis=1)
    segments = np.array([[0] * 5 + [1] * 4])
    positions = np.array([list(range(5)) + list(range(4))])
    got = jitted_apply(model)(variables, packed, segment_ids=segments, position_ids=positions).logits
    apply = jitted_apply(model)
    np.testing.assert_allclose(got[:, :5], apply(variables, first).logits, atol=1e-5)
    np.testing.assert_allclose(got[:, 5:], apply(variables, second).logits, atol=1e-5)


# ---- bad configs, named ----

@pytest.mark.parametrize("fields, named", [
    (dict(num_kv_heads=3), "num_kv_heads=3"),
    (dict(num_kv_heads=0), "num_kv_heads=0"),
    (dict(rope_scaling=dict(rope_type="dynamic", factor=2.0)), "'dynamic'"),
    (dict(rope_scaling=dict(rope_type="yarn", factor=2.0)), "'yarn'"),
    (dict(rope_scaling=dict(rope_type="linear")), "needs a factor"),
    (dict(rope_scaling=dict(rope_type="linear", factor=2.0, beta_fast=32)), "beta_fast"),
    (dict(rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0)),
     "low_freq_factor < high_freq_factor"),
    (dict(rope_scaling=dict(rope_type="linear", factor=-1.0)), "factor must be positive"),
    (dict(rope_theta=0.0), "rope_theta"),
    (dict(attention_head_dim=15), "head_dim must be even"),
    (dict(num_decoder_layers=2), "single-stack models; this config has num_decoder_layers=2"),
    (dict(position_embedding="learned", rope_scaling=dict(rope_type="linear", factor=2.0)), "rope_scaling"),
])
def test_bad_config_fields_are_named(fields, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace("[", r"\[")):
        tiny(**fields)


def test_rope_scaling_as_a_dict_is_a_hashable_record():
    cfg = tiny(rope_scaling=LLAMA3)
    assert cfg.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 16) and hash(cfg)
    assert RopeScaling.from_dict(cfg.rope_scaling.to_dict()) == cfg.rope_scaling


# ---- the checkpoints against transformers' PyTorch models ----

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from tests.test_checkpoints import assert_outputs_close, cross_entropy, torch_outputs, zoo_outputs  # noqa: E402

SMALL = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             num_labels=3, tie_word_embeddings=False, rms_norm_eps=1e-5)
PUBLIC_CONFIGS = {  # GQA everywhere but llama-mha (zoo's fused qkv); llama3 scaling; a window the batch exceeds
    "llama": lambda: transformers.LlamaConfig(**SMALL, rope_parameters={**LLAMA3, "rope_theta": 500.0}),
    "llama-mha": lambda: transformers.LlamaConfig(**{**SMALL, "num_key_value_heads": 4}, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    "mistral": lambda: transformers.MistralConfig(**SMALL, sliding_window=4),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL),
}
ARCHITECTURES = {
    "LlamaModel": ("llama", None), "LlamaForCausalLM": ("llama", "causal_lm"),
    "LlamaForSequenceClassification": ("llama", "sequence_classification"),
    "LlamaForCausalLM-mha": ("llama-mha", "causal_lm"),
    "MistralForCausalLM": ("mistral", "causal_lm"), "Qwen2ForCausalLM": ("qwen2", "causal_lm"),
    "MistralForSequenceClassification": ("mistral", "sequence_classification"),
    "Qwen2Model": ("qwen2", None),
}


def public_model(architecture):
    """A random transformers model, its norm weights near 1 and everything else far from its init."""
    kind, _ = ARCHITECTURES[architecture]
    model = getattr(transformers, architecture.split("-")[0])(PUBLIC_CONFIGS[kind]()).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(("norm" in name) + 0.2 * torch.randn_like(p))
    return model


def left_padded_batch(seed=0):
    """Two rows of 7, the second left-padded with pad id 0 (as decoders' tokenizers pad for generation)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, (2, 7))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def real_positions(results, mask):
    """The outputs at real tokens: a left pad's query sees no real key, which each library fills in its own way. The
    causal LM loss of `labels` counts the last pad's prediction of the first real token: see `assert_lm_loss_close`."""
    real = mask.astype(bool)
    return {k: (v[real] if v.ndim >= 2 and v.shape[:2] == mask.shape else v) for k, v in results.items()
            if not (k == "loss" and "logits" in results and results["logits"].ndim == 3)}


def assert_lm_loss_close(model, params, reference, inputs):
    """The causal LM loss over the real tokens that follow a real token, zoo's against transformers' own."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    follows_real = np.concatenate([np.zeros_like(mask[:, :1]), mask[:, :-1]], axis=1) * mask
    labels = np.where(follows_real == 1, ids, -100)
    logits = jitted_apply(model)({"params": params}, ids, mask).logits
    ours = cross_entropy(logits[:, :-1], labels[:, 1:])
    with torch.no_grad():
        theirs = reference(**{k: torch.as_tensor(v) for k, v in inputs.items()}, labels=torch.as_tensor(labels)).loss
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_checkpoints_both_ways_give_the_outputs_and_loss_of_transformers(architecture, tmp_path):
    kind, task = ARCHITECTURES[architecture]
    inputs = left_padded_batch()
    # transformers -> zoo
    reference = public_model(architecture)
    reference.save_pretrained(tmp_path / "hf")
    model, params = zoo.from_pretrained(tmp_path / "hf")
    assert model.task == task and model.config.family == kind.split("-")[0]
    assert model.config.kv_heads == (4 if kind == "llama-mha" else 2)
    ours = zoo_outputs(model, params, inputs, task)
    assert_outputs_close(real_positions(ours, inputs["attention_mask"]),
                         real_positions(torch_outputs(reference, inputs, task), inputs["attention_mask"]))
    if task == "causal_lm":
        assert_lm_loss_close(model, params, reference, inputs)
    # zoo -> transformers, from params of zoo's own
    params = random_params(model, inputs["input_ids"], seed=1, scale=0.2)["params"]
    zoo.save_pretrained(model, params, tmp_path / "zoo")
    loaded, info = getattr(transformers, architecture.split("-")[0]).from_pretrained(tmp_path / "zoo",
                                                                                     output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert loaded.config.to_dict()["rope_parameters"] == reference.config.to_dict()["rope_parameters"]
    ours = zoo_outputs(model, params, inputs, task)
    assert_outputs_close(real_positions(ours, inputs["attention_mask"]),
                         real_positions(torch_outputs(loaded.eval(), inputs, task), inputs["attention_mask"]))
    if task == "causal_lm":
        assert_lm_loss_close(model, params, loaded, inputs)


# ---- generation against transformers' generate ----

from tests.test_generate import HF_SEARCHES, assert_generation_equals_transformers, eos_candidate, hf  # noqa: E402,F401
from tests.test_generate import padded_batch  # noqa: E402
from tests.test_generate import public_model as generate_pair  # noqa: E402

GENERATING = {  # GQA + llama3 scaling whose smoothing band the positions cross; a window shorter than the prompt
    "LlamaForCausalLM": lambda: transformers.LlamaConfig(**SMALL, rope_parameters={**LLAMA3, "rope_theta": 500.0}),
    "MistralForCausalLM": lambda: transformers.MistralConfig(**SMALL, sliding_window=4),
    "Qwen2ForCausalLM": lambda: transformers.Qwen2Config(**SMALL),
}


@pytest.fixture(scope="module", params=list(GENERATING))
def decoder_pair(request, hf, tmp_path_factory):
    return generate_pair(hf, request.param, GENERATING[request.param](), tmp_path_factory.mktemp("decoder"),
                         lambda name, p: 0.5)


@pytest.mark.parametrize("search", HF_SEARCHES, ids=["greedy", "beam4", "beam4-early-penalty"])
def test_generation_equals_transformers(search, hf, decoder_pair):
    public, model, params = decoder_pair
    ids, mask = padded_batch(0, 6, [6, 4, 2], pad=97, left=True)
    if search["num_beams"] == 1:  # the random model's outputs vary, so equal tokens say something
        free = np.asarray(zoo.generate(model, params, ids, mask, max_new_tokens=10, eos_token_id=None).sequences)
        assert len(np.unique(free[:, 6:])) > 5 and len({tuple(row[6:]) for row in free}) == 3
        if model.config.attention == "sliding_window":  # and Mistral's window changes them
            dense = zoo.Transformer(model.config.replace(attention="dense"), "causal_lm")
            assert np.any(free != zoo.generate(dense, params, ids, mask, max_new_tokens=10, eos_token_id=None).sequences)
    assert_generation_equals_transformers(hf, decoder_pair, ids, mask, search, pad=97,
                                          eos_from=lambda sequences: eos_candidate(sequences, 6))


from tests.test_checkpoints import edit_config, saved  # noqa: E402


@pytest.mark.parametrize("preset, fields, named", [
    ("llama-tiny", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn'"),
    ("llama-tiny", dict(rope_scaling={"type": "dynamic", "factor": 4.0}), "'dynamic'"),
    ("llama-tiny", dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}), "'longrope'"),
    ("llama-tiny", dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ("llama-tiny", dict(attention_bias=True), "attention_bias=True and mlp_bias=False"),
    ("qwen2-tiny", dict(use_sliding_window=True), "use_sliding_window=True"),
    ("qwen2-tiny", dict(layer_types=["sliding_attention", "full_attention"]), "layer_types"),
])
def test_config_json_fields_zoo_cannot_honour_are_named(preset, fields, named, tmp_path):
    saved(tmp_path, preset, task="causal_lm")
    edit_config(tmp_path, **fields)
    with pytest.raises(ValueError, match=named):
        zoo.from_pretrained(tmp_path)


def test_a_mistral_config_without_a_window_is_dense_attention(tmp_path):
    saved(tmp_path, "mistral-tiny", task="causal_lm")
    assert zoo.from_pretrained(tmp_path)[0].config.attention == "sliding_window"
    edit_config(tmp_path, sliding_window=None)
    assert zoo.from_pretrained(tmp_path)[0].config.attention == "dense"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama-tiny", "mistral-tiny", "qwen2-tiny"])
def test_data_fsdp_tensor_mesh_equals_one_device(name):
    # grouped-query attention shards its 2 key/value heads over the tensor axis of 2
    model = zoo.create(name, task="causal_lm", **({"window": 5, "block_size": 4} if name == "mistral-tiny" else {}))
    batch = make_batch("causal_lm")
    single_params, single_losses = run_steps(model, make_mesh(1, 1, 1, devices=jax.devices()[:1]), batch)
    sharded_params, sharded_losses = run_steps(model, make_mesh(2, 2, 2), batch)
    np.testing.assert_allclose(sharded_losses, single_losses, atol=1e-5)
    chex.assert_trees_all_close(sharded_params, single_params, atol=1e-5)


def test_partial_rotary_factor_is_named(tmp_path):
    saved(tmp_path, "llama-tiny", task="causal_lm")
    edit_config(tmp_path, partial_rotary_factor=0.5)
    with pytest.raises(ValueError, match="partial_rotary_factor=0.5"):
        zoo.from_pretrained(tmp_path)


def test_several_eos_ids_in_config_json_round_trip(tmp_path):
    saved(tmp_path / "a", "llama-tiny", task="causal_lm")
    edit_config(tmp_path / "a", eos_token_id=[2, 5])
    model, params = zoo.from_pretrained(tmp_path / "a")
    assert model.config.eos_token_id == (2, 5) and hash(model.config)
    zoo.save_pretrained(model, params, tmp_path / "b")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "b").eos_token_id == [2, 5]
