"""Sparse attention: blockwise sliding-window and block-sparse patterns against dense attention with the same mask,
the rolling KV cache, pretrained weights in a sparse model, and cost that grows linearly in length; the gradients of
dense attention (FlashAttention's backward) and of a bias shared by the batch."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.model_helpers import decode_in_chunks, jitted_apply, random_params
from zoo.attention import blockwise_attention, dot_product_attention, key_blocks, pattern_mask, softmax_attention
from zoo.config import Config
from zoo.masks import AttentionMask


def qkv(length, batch=2, heads=2, head_dim=8, seed=0):
    return tuple(jax.random.normal(k, (batch, length, heads, head_dim)) for k in jax.random.split(jax.random.key(seed), 3))


def padded_and_packed(batch, length):
    """A key mask with the second row's last 7 tokens padded, and two packed documents in the first row."""
    key_mask = jnp.ones((batch, length), bool).at[1, length - 7:].set(False)
    segments = jnp.zeros((batch, length), jnp.int32).at[0, length // 2:].set(1)
    return key_mask, segments


def band_reference(length, window, global_tokens):
    """Longformer's pattern spelled out: |i - j| <= window, plus global rows and columns."""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    return (np.abs(i - j) <= window) | (i < global_tokens) | (j < global_tokens)


def assert_blockwise_equals_dense(cfg, length, reference_pattern):
    query, key, value = qkv(length)
    key_mask, segments = padded_and_packed(2, length)
    mask = AttentionMask(key_mask, segments, segments, causal=cfg.causal)
    blockwise = jax.jit(lambda q, k, v: blockwise_attention(q, k, v, mask, cfg, dropout=None))(query, key, value)
    dense_mask = mask.dense(length, length) & reference_pattern[None, None]
    dense = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, dense_mask, dropout=None))(query, key, value)
    real = np.asarray(key_mask)  # padding queries see nothing real either way; compare the real ones
    chex.assert_trees_all_close(np.asarray(blockwise)[real], np.asarray(dense)[real], atol=1e-5)


@pytest.mark.parametrize("dropout", [None, "dropout"])
def test_a_bias_shared_by_the_batch_gets_the_gradient_of_a_broadcast(dropout):
    """dot_product_attention sums a [1, heads, queries, keys] bias's gradient over the batch as a matrix-vector
    product (broadcast_over_batch); it must equal the gradient through jnp.broadcast_to."""
    query, key, value = qkv(16, batch=3)
    bias = jax.random.normal(jax.random.key(1), (1, 2, 16, 16))
    mask = jnp.ones((3, 1, 16, 16), bool).at[1, :, :, 12:].set(False)
    drop = None if dropout is None else (lambda probs: probs)  # the spelled-out path that dropout takes

    def loss(bias, query, broadcast_first):
        if broadcast_first:
            bias = jnp.broadcast_to(bias, (3, *bias.shape[1:]))
        out = dot_product_attention(query, key, value, mask, dropout=drop, bias=bias)
        return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)

    shared = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    (bias_grad, query_grad), (reference_bias_grad, reference_query_grad) = shared(bias, query, False), shared(
        bias, query, True)
    assert bias_grad.shape == (1, 2, 16, 16) and float(jnp.abs(bias_grad).max()) > 1e-3
    chex.assert_trees_all_close(bias_grad, reference_bias_grad, atol=1e-6)
    chex.assert_trees_all_close(query_grad, reference_query_grad, atol=1e-6)


def test_flash_attention_gradient_equals_autodiff_of_jax_attention():
    """softmax_attention (FlashAttention's backward) against autodiff through jax.nn.dot_product_attention: grouped
    query heads (4 over 2 key/value heads), a per-row bias, padding, and a row whose keys are all masked."""
    batch, length = 3, 16
    query = jax.random.normal(jax.random.key(0), (batch, length, 4, 8))
    key, value = (jax.random.normal(k, (batch, length, 2, 8)) for k in jax.random.split(jax.random.key(1)))
    bias = jax.random.normal(jax.random.key(2), (batch, 4, length, length))
    mask = jnp.ones((batch, 1, length, length), bool).at[1, :, :, 11:].set(False).at[2].set(False)
    weights = jax.random.normal(jax.random.key(3), (batch, length, 4, 8))

    def loss(attention, query, key, value, bias):
        return jnp.sum(attention(query, key, value, bias) * weights)

    ours = lambda q, k, v, b: softmax_attention(q, k, v, b, mask, 0.3)
    reference = lambda q, k, v, b: jax.nn.dot_product_attention(q, k, v, bias=b, mask=mask, scale=0.3)
    chex.assert_trees_all_close(jax.jit(ours)(query, key, value, bias), jax.jit(reference)(query, key, value, bias),
                                atol=1e-6)
    grads = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1, 2, 3)))(query, key, value, bias)
    expected = jax.jit(jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2, 3)))(query, key, value, bias)
    assert all(float(jnp.abs(g).max()) > 1e-2 for g in expected)
    chex.assert_trees_all_close(grads, expected, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("global_tokens", [0, 3])
def test_sliding_window_equals_dense_attention_with_the_band_mask(causal, global_tokens):
    # 45 tokens in blocks of 8: the length is padded internally; a window of 10 reaches two blocks each side
    cfg = Config(attention="sliding_window", window=10, block_size=8, global_tokens=global_tokens, causal=causal)
    band = band_reference(45, 10, global_tokens)
    np.testing.assert_array_equal(pattern_mask(cfg, jnp.arange(45), jnp.arange(45), causal), band)
    assert_blockwise_equals_dense(cfg, 45, band)


def block_layout_reference(cfg, num_blocks):
    """BigBird's block layout from `key_blocks`, after checking it is the ITC pattern."""
    layout = np.zeros((num_blocks, num_blocks), bool)
    for i, row in enumerate(key_blocks(cfg, num_blocks, cfg.causal)):
        row = row[row >= 0]
        neighbours = [j for j in (i - 1, i, i + 1) if 0 <= j < num_blocks and (j <= i or not cfg.causal)]
        assert list(row[:len(neighbours)]) == neighbours
        random = row[len(neighbours):]
        assert len(set(random)) == len(random) and not set(random) & set(neighbours)
        if cfg.causal:
            assert all(random < i)
        candidates = (i - 1 if cfg.causal else num_blocks - len(neighbours)) - cfg.global_tokens // cfg.block_size
        assert len(random) == min(cfg.num_random_blocks, max(candidates, 0))
        layout[i, row] = True
    return layout


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("global_tokens", [0, 5])
def test_block_sparse_equals_dense_attention_with_its_block_mask(causal, global_tokens):
    cfg = Config(attention="block_sparse", block_size=4, num_random_blocks=2, global_tokens=global_tokens,
                 causal=causal, attention_seed=7)
    length, num_blocks = 50, 13
    layout = block_layout_reference(cfg, num_blocks)
    i = np.arange(length)
    pattern = layout[i[:, None] // 4, i[None, :] // 4] | (i[:, None] < global_tokens) | (i[None, :] < global_tokens)
    np.testing.assert_array_equal(pattern_mask(cfg, jnp.arange(length), jnp.arange(length), causal), pattern)
    assert_blockwise_equals_dense(cfg, length, pattern)


def test_random_blocks_are_reproducible_and_follow_the_seed():
    cfg = Config(attention="block_sparse", block_size=4, num_random_blocks=3)
    np.testing.assert_array_equal(key_blocks(cfg, 20, False), key_blocks(cfg.replace(window=7), 20, False))
    assert not np.array_equal(key_blocks(cfg, 20, False), key_blocks(cfg.replace(attention_seed=1), 20, False))
    # a causal row's choice does not depend on the length, so KV-cache decoding sees the forward pass's pattern
    np.testing.assert_array_equal(key_blocks(cfg, 20, True), key_blocks(cfg, 30, True)[:20, :])


def test_global_tokens_attend_to_and_are_attended_by_every_token():
    cfg = Config(attention="sliding_window", window=2, block_size=4, global_tokens=1)
    query, key, value = qkv(40, batch=1)
    attend = jax.jit(lambda v: blockwise_attention(query, key, v, AttentionMask(), cfg, dropout=None))
    out = attend(value)
    # the global query sees every key: it is dense attention for row 0
    dense_row = jax.jit(lambda q: dot_product_attention(q, key, value, None, dropout=None))(query[:, :1])
    chex.assert_trees_all_close(out[:, :1], dense_row, atol=1e-6)
    # a far query sees the global key 0 but not key 10, which lies outside its window
    changed = lambda at: attend(value.at[:, at].add(1.0))
    assert not np.allclose(changed(0)[:, 30], out[:, 30])
    np.testing.assert_array_equal(changed(10)[:, 30], out[:, 30])
    assert not np.allclose(changed(10)[:, 0], out[:, 0])  # ... which the global query does see


@pytest.mark.parametrize("name,task,overrides", [("bert-tiny", "mlm", {}), ("gpt-tiny", "causal_lm", {}),
                                                 ("albert-tiny", "mlm", {}),
                                                 ("gpt-tiny", "causal_lm", {"scan_layers": True, "remat": "full"})])
@pytest.mark.parametrize("attention", ["sliding_window", "block_sparse"])
def test_a_pattern_that_covers_the_sequence_is_dense_attention(name, task, overrides, attention):
    # 24 tokens: a window of 24 covers them, and so do the three neighbouring blocks of 8
    dense = zoo.create(name, task=task, **overrides)
    sparse = zoo.create(name, task=task, attention=attention, window=24, block_size=8, **overrides)
    x = jax.random.randint(jax.random.key(0), (2, 24), 1, dense.config.vocab_size)
    mask = jnp.ones_like(x).at[1, 20:].set(0)
    params = random_params(dense, x)
    a, b = jitted_apply(dense)(params, x, mask).logits, jitted_apply(sparse)(params, x, mask).logits
    chex.assert_trees_all_close(a[:, :20], b[:, :20], atol=1e-5)
    narrow = zoo.create(name, task=task, attention=attention, window=2, block_size=4, num_random_blocks=0,
                        **overrides)
    assert not np.allclose(jitted_apply(narrow)(params, x, mask).logits[:, :20], a[:, :20], atol=1e-3)


@pytest.mark.parametrize("global_tokens", [0, 2])
def test_rolling_cache_decoding_equals_the_sliding_window_forward_pass(global_tokens):
    model = zoo.create("gpt-tiny", task="causal_lm", attention="sliding_window", window=4, block_size=4,
                       global_tokens=global_tokens)
    x = jax.random.randint(jax.random.key(0), (2, 14), 0, model.config.vocab_size)
    params = random_params(model, x)["params"]
    full = jitted_apply(model)({"params": params}, x).logits
    for chunks in ([1] * 14, [3, 1, 6, 1, 3]):  # a chunk longer than the window overwrites its own slots
        decoded, cache = decode_in_chunks(model, {"params": params}, x, chunks)
        chex.assert_trees_all_close(decoded, full, atol=1e-5)
    # the cache holds the global tokens and the last `window` positions, however long the generation
    assert cache["encoder"]["layers_0"]["attention"]["key"].shape[2] == global_tokens + 4
    assert zoo.init_cache(model, 1, 4096)["encoder"]["layers_0"]["attention"]["key"].shape[2] == global_tokens + 4


def test_block_sparse_decoding_equals_the_forward_pass():
    model = zoo.create("gpt-tiny", task="causal_lm", attention="block_sparse", block_size=2, num_random_blocks=1)
    x = jax.random.randint(jax.random.key(0), (1, 13), 0, model.config.vocab_size)
    params = random_params(model, x)["params"]
    decoded, _ = decode_in_chunks(model, {"params": params}, x, [5] + [1] * 8)
    chex.assert_trees_all_close(decoded, jitted_apply(model)({"params": params}, x).logits, atol=1e-5)


@pytest.mark.parametrize("attention", ["sliding_window", "block_sparse"])
def test_encoder_decoder_with_sparse_attention_decodes_as_its_forward_pass(attention):
    # the decoder's self-attention is causal although the config is not: its cache rolls, its random blocks look left
    model = zoo.create("transformer-tiny", task="seq2seq", attention=attention, window=3, block_size=2,
                       num_random_blocks=1)
    src = jax.random.randint(jax.random.key(0), (2, 11), 1, model.config.vocab_size)
    tgt = jax.random.randint(jax.random.key(1), (2, 9), 1, model.config.vocab_size)
    src_mask = jnp.ones_like(src).at[1, 8:].set(0)
    params = random_params(model, src, tgt)["params"]
    full = jitted_apply(model)({"params": params}, src, tgt, attention_mask=src_mask).logits
    encoded = jitted_apply(model, method="encode")({"params": params}, src, src_mask)
    cache = zoo.init_cache(model, 2, 9, source_length=11)
    expected_slots = 3 if attention == "sliding_window" else 9
    assert cache["decoder"]["layers_0"]["attention"]["key"].shape[2] == expected_slots
    step = jitted_apply(model, method="decode", decode=True, mutable=["cache"])
    logits = []
    for t in range(9):
        out, mutated = step({"params": params, "cache": cache}, tgt[:, t:t + 1], encoded, src_mask)
        cache = mutated["cache"]
        logits.append(out.logits)
    chex.assert_trees_all_close(jnp.concatenate(logits, axis=1), full, atol=1e-5)


def test_generation_with_the_rolling_cache_equals_generation_without_cache():
    model = zoo.create("gpt-tiny", task="causal_lm", attention="sliding_window", window=6, block_size=4)
    prompt = jax.random.randint(jax.random.key(0), (1, 5), 0, model.config.vocab_size)
    params = random_params(model, prompt)["params"]
    generated = zoo.generate(model, params, prompt, max_new_tokens=12, eos_token_id=None).sequences
    # greedy by full forward passes without a cache; the model is causal, so the unfilled tail changes nothing
    tokens = jnp.pad(prompt, ((0, 0), (0, 12)))
    forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens).logits.argmax(-1))
    for t in range(5, 17):
        tokens = tokens.at[:, t].set(forward(tokens)[:, t - 1])
    np.testing.assert_array_equal(generated, tokens)


def test_pretrained_weights_load_into_a_sparse_model(tmp_path):
    model = zoo.create("bert-tiny", task="mlm")
    x = jax.random.randint(jax.random.key(0), (1, 32), 1, model.config.vocab_size)
    params = random_params(model, x)["params"]
    zoo.save_pretrained(model, params, tmp_path)
    dense, dense_params = zoo.from_pretrained(tmp_path)
    sparse, sparse_params = zoo.from_pretrained(tmp_path, attention="sliding_window", window=32, block_size=8)
    assert sparse.config.attention == "sliding_window"
    chex.assert_trees_all_equal(sparse_params, dense_params)  # the attention pattern is not a weight
    chex.assert_trees_all_close(jitted_apply(sparse)({"params": sparse_params}, x).logits,
                                jitted_apply(model)({"params": params}, x).logits, atol=1e-5)


def test_extended_positions_let_a_pretrained_model_read_a_long_document(tmp_path):
    model = zoo.create("bert-tiny", task="mlm", max_length=32)
    x = jax.random.randint(jax.random.key(0), (1, 128), 1, model.config.vocab_size)
    params = random_params(model, x[:, :32])["params"]
    zoo.save_pretrained(model, params, tmp_path)
    sparse, loaded = zoo.from_pretrained(tmp_path, attention="sliding_window", window=8, block_size=8)
    with pytest.raises(ValueError, match="input_ids has length 128, longer than the model's max_length 32"):
        jax.eval_shape(sparse.apply, {"params": loaded}, x)
    long, extended = zoo.extend_positions(sparse, loaded, 128)
    table = extended["embeddings"]["position_embedding"]["embedding"]
    assert table.shape[0] == 128 and long.config.max_length == 128
    np.testing.assert_array_equal(table[96:], loaded["embeddings"]["position_embedding"]["embedding"])
    logits = jitted_apply(long)({"params": extended}, x).logits
    assert logits.shape == (1, 128, model.config.vocab_size) and np.isfinite(logits).all()
    # two layers of window 8: the first 16 tokens see nothing past the 32 the original model could read
    short = jitted_apply(sparse)({"params": loaded}, x[:, :32]).logits
    chex.assert_trees_all_close(logits[:, :16], short[:, :16], atol=1e-5)
    with pytest.raises(ValueError, match="max_length=16 is not longer than the model's 128 positions"):
        zoo.extend_positions(long, extended, 16)


def test_sparse_config_errors_name_the_field():
    with pytest.raises(ValueError, match="attention='local' is not one of"):
        Config(attention="local")
    with pytest.raises(ValueError, match="window must be positive, got 0"):
        Config(attention="sliding_window", window=0)
    with pytest.raises(ValueError, match="num_random_blocks must be >= 0"):
        Config(num_random_blocks=-1)


def compiled_costs(attention, length):
    """(forward FLOPs, temporary bytes of the gradient) of a whole small BERT, from the compiled programs."""
    model = zoo.create("bert-tiny", task="mlm", attention=attention, window=512, block_size=64, max_length=16384,
                       hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2, vocab_size=128)
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    forward = jax.jit(lambda p, x: model.apply(p, x).logits).lower(params, ids).compile()
    # the forward pass alone can hide its scores inside one fusion; the gradient has to keep them
    grad = jax.jit(jax.grad(lambda p, x: model.apply(p, x).logits.mean())).lower(params, ids).compile()
    cost = forward.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict on older jax
    return cost["flops"], grad.memory_analysis().temp_size_in_bytes


@pytest.fixture(scope="module")
def dense_costs():
    return {length: compiled_costs("dense", length) for length in (4096, 16384)}


@pytest.mark.parametrize("attention", ["sliding_window", "block_sparse"])
def test_sparse_cost_grows_linearly_and_dense_quadratically(attention, dense_costs):
    short, long = compiled_costs(attention, 4096), compiled_costs(attention, 16384)
    for measure in (0, 1):  # FLOPs, then memory
        assert 3.6 < long[measure] / short[measure] < 4.4, (attention, measure, short, long)
        assert dense_costs[16384][measure] / dense_costs[4096][measure] > 12, dense_costs
        assert long[measure] < dense_costs[16384][measure] / 10, (attention, measure, long, dense_costs)
