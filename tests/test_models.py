"""Behaviour of every family on tiny configs: shapes, invariances, caches, and errors."""

import contextlib
import functools
import io

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.embeddings import sinusoidal_positions
from zoo.layers import ATTENTION_OUTPUT, RelativePositionBias, stack_layer_params
from tests.model_helpers import decode_in_chunks, jitted_apply, random_params
from zoo.registry import example_inputs

TINY = ["bert-tiny", "albert-tiny", "gpt-tiny", "transformer-tiny", "roberta-tiny", "distilbert-tiny", "bart-tiny"]
EXPECTED_FIELDS = {
    None: {"last_hidden_state"},
    "pretraining": {"prediction_logits", "seq_relationship_logits"},
    "mlm": {"logits"},
    "causal_lm": {"logits"},
    "seq2seq": {"logits", "encoder_last_hidden_state"},
    "sequence_classification": {"logits"},
    "token_classification": {"logits"},
    "question_answering": {"start_logits", "end_logits"},
}


def ids(key, batch=2, length=9, vocab=1000):
    return jax.random.randint(key, (batch, length), 2, vocab)


def family_task_pairs():
    return [(name, task) for name in TINY for task in zoo.tasks(zoo.get_config(name).family)]


@pytest.mark.parametrize("name, task", family_task_pairs())
def test_every_family_and_task_gives_named_outputs_of_the_right_shape(name, task, key):
    model = zoo.create(name, task=task, num_labels=3)
    cfg, x = model.config, ids(key)
    args = (x, x) if cfg.is_encoder_decoder else (x,)
    out = jitted_apply(model)(random_params(model, *args), *args)
    present = {f for f, v in vars(out).items() if v is not None}
    assert EXPECTED_FIELDS[task] <= present
    chex.assert_shape(out.last_hidden_state, (2, 9, cfg.hidden_size))
    shapes = {"prediction_logits": (2, 9, cfg.vocab_size), "seq_relationship_logits": (2, 2),
              "start_logits": (2, 9), "end_logits": (2, 9), "pooled_output": (2, cfg.hidden_size),
              "logits": {"mlm": (2, 9, cfg.vocab_size), "causal_lm": (2, 9, cfg.vocab_size),
                         "seq2seq": (2, 9, cfg.vocab_size), "sequence_classification": (2, 3),
                         "token_classification": (2, 9, 3)}.get(task)}
    for field in present - {"last_hidden_state", "encoder_last_hidden_state"}:
        chex.assert_shape(getattr(out, field), shapes[field])
        assert getattr(out, field).dtype == jnp.float32


@pytest.mark.parametrize("name", TINY)
def test_bfloat16_compute_keeps_float32_params(name, key):
    model = zoo.create(name, dtype="bfloat16")
    x = ids(key)
    args = example_inputs(model, 2, 9)
    variables = random_params(model, *args)  # init's dtypes
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    out = jitted_apply(model)(variables, *((x,) * len(args)))
    assert out.last_hidden_state.dtype == jnp.bfloat16
    assert jnp.all(jnp.isfinite(out.last_hidden_state.astype(jnp.float32)))


@pytest.mark.parametrize("name", ["bert-tiny", "albert-tiny", "gpt-tiny"])
def test_appending_padding_leaves_real_tokens_unchanged(name, key):
    model = zoo.create(name, task="mlm" if name != "gpt-tiny" else "causal_lm", pooling="mean")
    x = ids(key, length=7)
    variables, apply = random_params(model, x), jitted_apply(model)
    short = apply(variables, x, attention_mask=jnp.ones_like(x))
    padded = jnp.concatenate([x, jnp.zeros((2, 5), x.dtype)], axis=1)
    mask = jnp.concatenate([jnp.ones_like(x), jnp.zeros((2, 5), x.dtype)], axis=1)
    long = apply(variables, padded, attention_mask=mask)
    chex.assert_trees_all_close(long.last_hidden_state[:, :7], short.last_hidden_state, atol=1e-6)
    chex.assert_trees_all_close(long.logits[:, :7], short.logits, atol=1e-5)
    if long.pooled_output is not None:
        chex.assert_trees_all_close(long.pooled_output, short.pooled_output, atol=1e-6)


def test_encoder_decoder_ignores_source_padding(key):
    model = zoo.create("transformer-tiny", task="seq2seq")
    src, tgt = ids(key, length=6), ids(jax.random.key(1), length=5)
    variables, apply = random_params(model, src, tgt), jitted_apply(model)
    short = apply(variables, src, tgt)
    padded = jnp.pad(src, ((0, 0), (0, 4)))
    mask = jnp.pad(jnp.ones_like(src), ((0, 0), (0, 4)))
    long = apply(variables, padded, tgt, attention_mask=mask)
    chex.assert_trees_all_close(long.logits, short.logits, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_mask_aware_pooling_matches_numpy(pooling, key):
    model = zoo.create("bert-tiny", pooling=pooling)
    x = ids(key, length=6)
    mask = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out = jitted_apply(model)(random_params(model, x), x, attention_mask=mask)
    h, m = np.asarray(out.last_hidden_state), np.asarray(mask, bool)
    mean = np.stack([h[b][m[b]].mean(0) for b in range(2)])
    maximum = np.stack([h[b][m[b]].max(0) for b in range(2)])
    expected = {"mean": mean, "max": maximum, "mean_max": np.concatenate([mean, maximum], -1)}[pooling]
    np.testing.assert_allclose(out.pooled_output, expected, atol=1e-6)


def test_gpt_is_causal(key):
    model = zoo.create("gpt-tiny", task="causal_lm")
    x = ids(key, length=10)
    variables, apply = random_params(model, x), jitted_apply(model)
    changed = x.at[:, 6:].set(ids(jax.random.key(5), length=4))
    a, b = apply(variables, x).logits, apply(variables, changed).logits
    chex.assert_trees_all_close(a[:, :6], b[:, :6], atol=1e-6)
    assert not np.allclose(a[:, 6:], b[:, 6:])


def test_decoder_is_causal(key):
    model = zoo.create("transformer-tiny", task="seq2seq")
    src, tgt = ids(key), ids(jax.random.key(1), length=8)
    variables, apply = random_params(model, src, tgt), jitted_apply(model)
    changed = tgt.at[:, 5:].set(3)
    a, b = apply(variables, src, tgt).logits, apply(variables, src, changed).logits
    chex.assert_trees_all_close(a[:, :5], b[:, :5], atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True}])
def test_kv_cache_decoding_equals_full_forward_gpt(overrides, key):
    model = zoo.create("gpt-tiny", task="causal_lm", **overrides)
    x = ids(key, length=10)
    variables = random_params(model, x)
    full = jitted_apply(model)(variables, x).logits
    one_by_one, _ = decode_in_chunks(model, variables, x, [1] * 10)
    prefill_then_steps, _ = decode_in_chunks(model, variables, x, [6, 1, 1, 2])
    chex.assert_trees_all_close(one_by_one, full, atol=1e-5)
    chex.assert_trees_all_close(prefill_then_steps, full, atol=1e-5)


def test_kv_cache_with_left_padded_prompt_equals_unpadded_forward(key):
    model = zoo.create("gpt-tiny", task="causal_lm")
    x = ids(key, batch=1, length=6)
    variables = random_params(model, x)
    full = jitted_apply(model)(variables, x).logits
    padded = jnp.pad(x, ((0, 0), (3, 0)))
    mask = jnp.pad(jnp.ones_like(x), ((0, 0), (3, 0)))
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    cache = zoo.init_cache(model, 1, 9)
    out, _ = jitted_apply(model, decode=True, mutable=["cache"])(
        {**variables, "cache": cache}, padded, attention_mask=mask, position_ids=positions)
    chex.assert_trees_all_close(out.logits[:, 3:], full, atol=1e-5)


@pytest.mark.parametrize("name", ["transformer-tiny", "bart-tiny"])  # BART: learned positions past its offset
@pytest.mark.parametrize("overrides", [{}, dict(scan_layers=True, remat="full")], ids=["unrolled", "scan-remat"])
def test_kv_cache_decoding_with_the_source_keys_and_values_cached_equals_full_forward_encoder_decoder(overrides, name,
                                                                                                       key):
    # Only the first step is given the encoded source, whose keys and values each layer caches; the later steps get
    # encoded=None. They equal steps that are each given it (and project it again) and the full forward pass.
    model = zoo.create(name, task="seq2seq", **overrides)
    src, tgt = ids(key), ids(jax.random.key(1), length=7)
    src_mask = jnp.ones_like(src).at[1, 6:].set(0)
    variables = random_params(model, src, tgt)
    full = jitted_apply(model)(variables, src, tgt, attention_mask=src_mask).logits
    encoded = jitted_apply(model, method="encode")(variables, src, src_mask)
    decode_step = jitted_apply(model, method="decode", decode=True, mutable=["cache"])
    logits = {}
    for steps_given in ("first step only", "every step"):
        cache = zoo.init_cache(model, 2, 7, source_length=src.shape[1])
        steps = []
        for t in range(7):
            source = encoded if t == 0 or steps_given == "every step" else None
            out, mutated = decode_step({**variables, "cache": cache}, tgt[:, t:t + 1], source, src_mask)
            cache = mutated["cache"]
            steps.append(out.logits)
        logits[steps_given] = jnp.concatenate(steps, axis=1)
    chex.assert_trees_all_close(logits["first step only"], logits["every step"], atol=1e-6)
    chex.assert_trees_all_close(logits["first step only"], full, atol=1e-6)


@pytest.mark.parametrize("name", ["bert-tiny", "gpt-tiny"])
def test_packed_documents_equal_each_document_alone(name, key):
    model = zoo.create(name)
    a, b = ids(key, batch=1, length=5), ids(jax.random.key(3), batch=1, length=4)
    variables, apply = random_params(model, a), jitted_apply(model)
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.array([[1] * 5 + [2] * 4])
    positions = jnp.array([list(range(5)) + list(range(4))])
    out = apply(variables, packed, segment_ids=segments, position_ids=positions).last_hidden_state
    alone_a = apply(variables, a).last_hidden_state
    alone_b = apply(variables, b).last_hidden_state
    chex.assert_trees_all_close(out, jnp.concatenate([alone_a, alone_b], axis=1), atol=1e-5)


def test_albert_parameter_count_does_not_grow_with_depth():
    counts = {n: zoo.param_count(zoo.create("albert-tiny", num_layers=n)) for n in (1, 4, 24)}
    assert len(set(counts.values())) == 1
    assert zoo.param_count(zoo.create("bert-tiny", num_layers=4)) > zoo.param_count(zoo.create("bert-tiny"))


def test_sinusoidal_positions_equal_the_formula_of_vaswani_et_al():
    table = sinusoidal_positions(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, i] == pytest.approx(np.sin(angle), abs=1e-7)
            assert table[pos, 8 + i] == pytest.approx(np.cos(angle), abs=1e-7)


def test_sinusoidal_model_adds_the_table_to_scaled_token_embeddings(key):
    model = zoo.create("transformer-tiny", dropout_rate=0.0)
    src = ids(key, length=5)
    variables = random_params(model, src, src)
    got = jitted_apply(model, method=lambda m, x, p: m.encoder_embeddings(x, p, deterministic=True))(
        variables, src, jnp.broadcast_to(jnp.arange(5), (2, 5)))
    table = variables["params"]["token_embedding"]["embedding"]
    expected = table[src] * np.sqrt(64) + sinusoidal_positions(128, 64)[:5]
    chex.assert_trees_all_close(got, expected, atol=1e-5)


def test_without_positions_an_encoder_sees_a_bag_of_words(key):
    """position_embedding="none": permuting the source tokens permutes the encoder's states, and nothing else."""
    model = zoo.create("transformer-tiny", position_embedding="none", dropout_rate=0.0)
    src = ids(key, length=6)
    variables = random_params(model, src, src)
    encode = jitted_apply(model, method=lambda m, x: m.encode(x, jnp.ones_like(x), deterministic=True))
    permutation = np.array([3, 0, 5, 1, 4, 2])
    chex.assert_trees_all_close(encode(variables, src[:, permutation]), encode(variables, src)[:, permutation],
                                atol=1e-5)
    with_positions = zoo.create("transformer-tiny", dropout_rate=0.0)
    encode = jitted_apply(with_positions, method=lambda m, x: m.encode(x, jnp.ones_like(x), deterministic=True))
    assert not np.allclose(encode(variables, src[:, permutation]), encode(variables, src)[:, permutation], atol=1e-3)


def test_alibi_initialised_relative_bias_is_minus_slope_times_distance_in_each_direction(key):
    cfg = zoo.get_config("bert-tiny").replace(position_embedding="relative_bias", relative_attention_alibi_init=2.0)
    # distances 0..8: T5's exact buckets (8 per direction of 32 buckets) and the first log one
    positions = jnp.arange(9)
    bias = RelativePositionBias(cfg, bidirectional=True).init_with_output(key, positions, positions)[0]
    slopes = 2.0 * 2.0 ** (-8.0 * np.arange(1, 5) / 4)  # ALiBi's geometric slopes of 4 heads, times 2
    distance = np.abs(np.arange(9)[None, :] - np.arange(9)[:, None])
    chex.assert_trees_all_close(bias[0], -slopes[:, None, None] * distance[None], atol=1e-6)
    # The model's own table starts there: its encoder reads it on the first call
    model = zoo.create("bert-tiny", task="pretraining", position_embedding="relative_bias",
                       relative_attention_alibi_init=2.0)
    table = jax.jit(model.init)(key, ids(key))["params"]["encoder"]["relative_position_bias"]["embedding"]
    chex.assert_trees_all_close(nn.unbox(table)[17], -slopes, atol=1e-6)  # bucket 17: one key to the right
    with pytest.raises(ValueError, match="relative_attention_alibi_init=1.0 initialises the table"):
        zoo.get_config("bert-tiny").replace(relative_attention_alibi_init=1.0)


def test_untied_first_token_takes_its_own_bias_to_and_from_every_position(key):
    cfg = zoo.get_config("bert-tiny").replace(position_embedding="relative_bias", relative_attention_alibi_init=2.0,
                                              relative_attention_untie_first=True)
    positions = jnp.arange(9)
    module = RelativePositionBias(cfg, bidirectional=True)
    variables = module.init(key, positions, positions)
    tied = RelativePositionBias(cfg.replace(relative_attention_untie_first=False), bidirectional=True).apply(
        {"params": {"embedding": variables["params"]["embedding"]}}, positions, positions)
    first = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])  # [from the first token / to it, heads]
    bias = module.apply({"params": {**variables["params"], "first_token": first}}, positions, positions)[0]
    chex.assert_trees_all_close(bias[:, 0, :], np.broadcast_to(first[0][:, None], (4, 9)))  # its query row
    chex.assert_trees_all_close(bias[:, 1:, 0], np.broadcast_to(first[1][:, None], (4, 8)))  # its key column
    chex.assert_trees_all_close(bias[:, 1:, 1:], tied[0][:, 1:, 1:])  # the other tokens keep the distance bias
    started = nn.unbox(variables["params"]["first_token"])
    chex.assert_trees_all_close(started, np.zeros((2, 4)))  # the first token starts by attending evenly
    with pytest.raises(ValueError, match="relative_attention_untie_first unties"):
        zoo.get_config("bert-tiny").replace(relative_attention_untie_first=True)
    with pytest.raises(ValueError, match=r"a causal stack's bias \(causal=True\) stays tied"):
        zoo.get_config("bert-tiny").replace(position_embedding="relative_bias", relative_attention_untie_first=True,
                                            causal=True)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_pre_and_post_layernorm_give_finite_gradients(norm_position, key):
    model = zoo.create("bert-tiny", task="mlm", norm_position=norm_position, num_layers=4)
    x = ids(key)
    variables = random_params(model, x)
    grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, x, deterministic=False,
                                                   rngs={"dropout": key}).logits.mean()))(variables["params"])
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


@pytest.mark.parametrize("name", ["bert-tiny", "gpt-tiny"])
def test_scan_and_unrolled_stacks_give_the_same_outputs(name, key):
    unrolled = zoo.create(name)
    scanned = zoo.create(name, scan_layers=True)
    x = ids(key)
    params = random_params(unrolled, x)["params"]
    scanned_params = {**params, "encoder": stack_layer_params(params["encoder"], unrolled.config.num_layers)}
    chex.assert_trees_all_equal_shapes(scanned_params, random_params(scanned, x)["params"])
    chex.assert_trees_all_close(jitted_apply(scanned)({"params": scanned_params}, x).last_hidden_state,
                                jitted_apply(unrolled)({"params": params}, x).last_hidden_state, atol=1e-5)


@pytest.mark.parametrize("remat", [p for p in zoo.config.REMAT_POLICIES if p != "none"])
def test_remat_gives_the_same_gradients(remat, key):
    plain, rematted = zoo.create("gpt-tiny", task="causal_lm"), zoo.create("gpt-tiny", task="causal_lm", remat=remat)
    x = ids(key)
    params = random_params(plain, x)["params"]

    def grads(model):
        return jax.jit(jax.grad(lambda p: model.apply({"params": p}, x).logits.mean()))(params)

    chex.assert_trees_all_close(grads(rematted), grads(plain), atol=1e-6)


def test_remat_policies_save_what_they_say(key):
    """The residuals the backward pass keeps (jax's own listing): fewer from none to full, matmul outputs under dots
    (fewer without the batched attention matmuls), and only the named attention outputs under "attention"."""
    x = ids(key)
    params = random_params(zoo.create("gpt-tiny", task="causal_lm"), x)["params"]
    num_layers = zoo.get_config("gpt-tiny").num_layers

    def saved(remat):
        model = zoo.create("gpt-tiny", task="causal_lm", remat=remat)
        listing = io.StringIO()
        with contextlib.redirect_stdout(listing):
            jax.ad_checkpoint.print_saved_residuals(lambda p: model.apply({"params": p}, x).logits.mean(), params)
        lines = listing.getvalue().splitlines()
        return len(lines), sum("dot_general" in line for line in lines), sum(ATTENTION_OUTPUT in line for line in lines)

    counts = {remat: saved(remat) for remat in ("none", "dots", "dots_no_batch", "attention", "full")}
    totals = [total for total, _, _ in counts.values()]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals), counts
    assert counts["dots"][1] > counts["dots_no_batch"][1] > 0 == counts["attention"][1] == counts["full"][1], counts
    assert counts["attention"][2] == num_layers and counts["full"][2] == 0, counts


def test_dropout_needs_the_flag_and_follows_the_key(key):
    model = zoo.create("bert-tiny")
    x = ids(key)
    variables = random_params(model, x)
    with_dropout, apply = jitted_apply(model, deterministic=False), jitted_apply(model)
    run = lambda k: with_dropout(variables, x, rngs={"dropout": k}).last_hidden_state
    chex.assert_trees_all_close(run(jax.random.key(1)), run(jax.random.key(1)))
    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))
    chex.assert_trees_all_close(apply(variables, x).last_hidden_state, apply(variables, x).last_hidden_state)


# Bad input: a ValueError naming the numbers, raised while tracing (so under eval_shape), before any compilation.

def test_sequence_longer_than_the_position_table(key):
    model = zoo.create("bert-tiny")
    with pytest.raises(ValueError, match="input_ids has length 129, longer than the model's max_length 128"):
        jax.eval_shape(model.init, key, jnp.ones((1, 129), jnp.int32))


def test_mask_shape_must_match_the_ids(key):
    model = zoo.create("bert-tiny")
    x = ids(key)
    variables = random_params(model, x)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 8\) but input_ids has shape \(2, 9\)"):
        model.apply(variables, x, attention_mask=jnp.ones((2, 8)))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\], got shape \(9,\)"):
        model.apply(variables, x[0])
    with pytest.raises(ValueError, match="integer token ids"):
        model.apply(variables, x.astype(jnp.float32))


def test_inputs_the_model_has_no_use_for_are_errors(key):
    gpt = zoo.create("gpt-tiny")
    x = ids(key)
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        jax.eval_shape(functools.partial(gpt.init, token_type_ids=jnp.zeros_like(x)), key, x)
    with pytest.raises(ValueError, match="decode=True needs a causal model"):
        jax.eval_shape(functools.partial(zoo.create("bert-tiny").init, decode=True), key, x)
    with pytest.raises(ValueError, match="pooling='none'"):
        jax.eval_shape(zoo.create("bert-tiny", task="sequence_classification", pooling="none").init, key, x)


def test_decoding_without_the_encoded_source_needs_the_cache_a_call_with_it_filled(key):
    model = zoo.create("transformer-tiny", task="seq2seq")
    tgt = ids(key, length=1)
    decode = functools.partial(model.init, key, tgt, None, method="decode")
    with pytest.raises(ValueError, match="encoded=None .* needs decode=True"):
        jax.eval_shape(decode)
    with pytest.raises(ValueError, match="cross-attention without `encoded` reads .* from the cache"):
        jax.eval_shape(functools.partial(decode, decode=True))  # no cache holds the source's keys and values
    with pytest.raises(ValueError, match="pass source_length"):
        zoo.init_cache(model, 2, 4)
