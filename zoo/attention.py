"""Scaled dot-product attention over all keys (dense) or over a sparse pattern computed block by block.

`Config.attention` picks the pattern of self-attention:
- "dense": every query sees every key it is not masked from.
- "sliding_window" (Longformer, Beltagy et al. 2020): a query sees the keys within `window` positions on each side,
  only to the left in a causal model.
- "block_sparse" (BigBird's ITC pattern, Zaheer et al. 2020): a block of `block_size` queries sees its own and the
  two neighbouring key blocks (only the left one when causal) and `num_random_blocks` random key blocks, drawn once
  per query block from `attention_seed`.
Both sparse patterns add `global_tokens`: the first tokens see every key and every query sees them.

Sparse attention runs blockwise: each block of queries gathers only the key blocks its pattern can reach (plus the
global keys), and the per-block scores go through the same `dot_product_attention` as dense attention, with the
blocks folded into the batch. Time and memory grow as length * window; no [length, length] score or mask exists.
Cross-attention is always dense: its queries and keys are different sequences, so a band between them means nothing.

`Config.attention_kernel="cudnn"` sends dense attention and the causal sliding window to cuDNN's fused kernel on an
NVIDIA GPU instead (`cudnn_attention`); everything else, and KV-cache decoding, stays on the XLA path.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import Config
from zoo.masks import AttentionMask


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_over_batch(bias, batch: int):
    """[1, ...] -> [batch, ...]; its gradient sums the batch as a matrix-vector product, because XLA:CPU reduces a
    tensor this large over its leading axis some 50x slower (12 ms against 0.2 ms for [64, 4, 128, 128] float32 on a
    2-core AMD EPYC: a seventh of the demo BERT's train step, whose relative position bias is shared by the batch)."""
    return jnp.broadcast_to(bias, (batch, *bias.shape[1:]))


def _broadcast_over_batch_forward(bias, batch):
    return broadcast_over_batch(bias, batch), None


def _broadcast_over_batch_backward(batch, _, grad):
    summed = jnp.ones((1, batch), grad.dtype) @ grad.reshape(batch, -1)
    return (summed.reshape(1, *grad.shape[1:]),)


broadcast_over_batch.defvjp(_broadcast_over_batch_forward, _broadcast_over_batch_backward)


MASKED_LOGIT = 0.7 * float(np.finfo(np.float32).min)  # large and finite: a fully masked row is uniform, not NaN


def _shared_by_groups(query, x):  # grouped-query attention: each key/value head serves heads / kv_heads query heads
    return jnp.repeat(x, query.shape[2] // x.shape[2], axis=2)


def _summed_over_groups(grad, x):  # the gradient of _shared_by_groups: [batch, keys, heads, dim] -> x's shape
    return grad.reshape(*x.shape[:3], -1, grad.shape[-1]).sum(axis=3)


def heads_first(x):
    """[batch, length, heads, head_dim] <-> [batch, heads, length, head_dim] (the swap is its own inverse): the KV
    cache's layout, and the one the attention weights' products run in."""
    return jnp.swapaxes(x, 1, 2)


# The products of a [batch, heads, queries, keys] matrix with [batch, length, heads, head_dim] values run head-major:
# spelled on the [batch, length, heads, head_dim] layout, XLA:CPU made them matmuls with head_dim-long (32) rows at
# about half the rate, and the transposes cost less than that (the demo's attention, forward and backward: 33-36 ms ->
# 29-30 ms on the 2-core AMD EPYC, 64 rows of 128 tokens, 4 heads of 32).
def _weights_times(weights, x):
    """weights [batch, heads, queries, keys] times x [batch, keys, heads, head_dim] -> [batch, queries, heads,
    head_dim]."""
    return heads_first(jnp.einsum("bnts,bnsh->bnth", weights, heads_first(x)))


def _weights_transposed_times(weights, x):
    """weights [batch, heads, queries, keys] transposed, times x [batch, queries, heads, head_dim] -> [batch, keys,
    heads, head_dim]."""
    return heads_first(jnp.einsum("bnts,bnth->bnsh", weights, heads_first(x)))


def attention_probabilities(query, key, bias, mask, factor):
    """[batch, heads, queries, keys] float32 softmax of query [batch, queries, heads, head_dim] against key [batch,
    keys, heads, head_dim], with bias [batch, heads, queries, keys] and mask [batch or 1, 1, queries, keys] (True:
    seen)."""
    logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32) * factor
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    return jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def softmax_attention(query, key, value, bias, mask, factor: float):
    """Softmax(q k^T * factor + bias) v without dropout, each key/value head shared by heads / kv_heads query heads;
    its gradient is FlashAttention's (Dao et al. 2022): the softmax's backward needs sum_s P_ts dP_ts per query,
    which equals sum_h dO_th O_th, a [queries, head_dim] sum instead of a [queries, keys] one."""
    return _softmax_attention_forward(query, key, value, bias, mask, factor)[0]


def _softmax_attention_forward(query, key, value, bias, mask, factor):
    key_heads, value_heads = _shared_by_groups(query, key), _shared_by_groups(query, value)
    probs = attention_probabilities(query, key_heads, bias, mask, factor)
    out = _weights_times(probs.astype(value.dtype), value_heads)
    return out, (query, key, value, bias, mask, probs, out)


def _softmax_attention_backward(factor, residuals, d_out):
    query, key, value, bias, mask, probs, out = residuals
    key_heads, value_heads = _shared_by_groups(query, key), _shared_by_groups(query, value)
    d_value = _weights_transposed_times(probs.astype(value.dtype), d_out)
    d_probs = jnp.einsum("btnh,bsnh->bnts", d_out, value_heads, preferred_element_type=jnp.float32)
    row = jnp.einsum("btnh,btnh->bnt", d_out.astype(jnp.float32), out.astype(jnp.float32))
    d_logits = probs * (d_probs - row[..., None])  # softmax's backward
    if mask is not None:  # a masked logit is a constant (a fully masked row's P is uniform, not 0)
        d_logits = jnp.where(mask, d_logits, 0.0)
    d_bias = None if bias is None else d_logits.astype(bias.dtype)
    d_scaled = (d_logits * factor).astype(query.dtype)
    d_query = _weights_times(d_scaled, key_heads)
    d_key = _weights_transposed_times(d_scaled, query)
    return d_query, _summed_over_groups(d_key, key), _summed_over_groups(d_value, value), d_bias, None


softmax_attention.defvjp(_softmax_attention_forward, _softmax_attention_backward)


def dot_product_attention(query, key, value, mask, *, dropout: nn.Dropout | None, bias=None, scale: bool = True):
    """Softmax(q k^T / sqrt(d) + bias) v with [batch, length, heads, head_dim] inputs; logits and softmax in float32.

    `bias`: [batch or 1, heads, queries, keys] added to the logits (T5's relative positions); `scale=False` drops the
    1/sqrt(d) (T5 folds it into the weights).

    Without dropout this is `softmax_attention`, whose gradient is FlashAttention's. Attention dropout needs the
    probabilities after dropout, so that path spells the computation out and leaves the gradient to autodiff.
    """
    factor = 1.0 / math.sqrt(query.shape[-1]) if scale else 1.0
    if bias is not None and bias.shape[0] != query.shape[0]:
        bias = broadcast_over_batch(bias, query.shape[0])
    if dropout is None:
        return softmax_attention(query, key, value, bias, mask, factor)
    probs = dropout(attention_probabilities(query, _shared_by_groups(query, key), bias, mask, factor))
    return _weights_times(probs.astype(value.dtype), _shared_by_groups(query, value))


def attend(query, key, value, mask: AttentionMask, cfg: Config, *, dropout: nn.Dropout | None, sparse: bool,
           decode: bool = False):
    """Attention with `cfg.attention`'s pattern when `sparse` (self-attention), else over all unmasked keys.

    `decode`: a KV-cache decoding step (self- or cross-attention): the keys and values come in the cache's layout,
    [batch, kv_heads, keys, head_dim], and go to `cache_attention`.
    """
    if decode:
        return cache_attention(query, key, value, mask, cfg, sparse=sparse)
    if cfg.attention_kernel == "cudnn":
        return cudnn_attention(query, key, value, mask, cfg, sparse=sparse)
    return xla_attention(query, key, value, mask, cfg, dropout=dropout, sparse=sparse)


def cache_attention(query, key, value, mask: AttentionMask, cfg: Config, *, sparse: bool):
    """Attention of a few new queries [batch, new, heads, head_dim] over keys and values in the KV cache's layout
    [batch, kv_heads, keys, head_dim] (decoding; no dropout): `dot_product_attention`'s computation, with a dense
    mask of the pattern, and each group of query heads sharing its key/value head."""
    batch, new, heads, head_dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    dense_mask = mask.dense(new, keys)  # [batch or 1, 1, new, keys]
    if sparse:
        dense_mask &= pattern_mask(cfg, *mask.positions(new, keys), mask.causal)[None, None]
    grouped = query.reshape(batch, new, kv_heads, groups, head_dim)
    logits = jnp.einsum("btkgh,bksh->bkgts", grouped, key, preferred_element_type=jnp.float32)
    if cfg.attention_scale:
        logits = logits * (1.0 / math.sqrt(head_dim))
    if mask.bias is not None:  # [batch or 1, heads, new, keys]
        logits = logits + mask.bias.astype(jnp.float32).reshape(-1, kv_heads, groups, new, keys)
    logits = jnp.where(dense_mask[:, :, None], logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    out = jnp.einsum("bkgts,bksh->btkgh", probs, value)
    return out.reshape(batch, new, heads, head_dim)


def xla_attention(query, key, value, mask: AttentionMask, cfg: Config, *, dropout: nn.Dropout | None, sparse: bool):
    """`attend` on any backend: dense with a [queries, keys] mask, sparse patterns blockwise."""
    if sparse and cfg.attention != "dense" and mask.query_positions is None:
        return blockwise_attention(query, key, value, mask, cfg, dropout=dropout)
    query_length, key_length = query.shape[1], key.shape[1]
    dense_mask = mask.dense(query_length, key_length)
    if sparse:  # KV-cache decoding: a few queries over the cache, where a dense mask of the pattern is cheapest
        dense_mask &= pattern_mask(cfg, *mask.positions(query_length, key_length), mask.causal)[None, None]
    return dot_product_attention(query, key, value, dense_mask, dropout=dropout, bias=mask.bias,
                                 scale=cfg.attention_scale)


def cudnn_attention(query, key, value, mask: AttentionMask, cfg: Config, *, sparse: bool):
    """`attend` through cuDNN's fused flash-attention kernel (`jax.nn.dot_product_attention(implementation="cudnn")`).

    The kernel skips the blocks that a causal mask or a left sliding window hides, so a causal sliding window costs
    O(length * window) with no gathered copies of the keys. It takes padding as per-row lengths, which describe
    right padding only: a key mask that is anything else (left padding) goes to `xla_attention`, chosen on the device
    by a `lax.cond`, so the result is exact for every mask. Packed rows (segment ids) have no cuDNN form here and are a
    ValueError; so is a backend other than a GPU. KV-cache decoding (a few queries) never comes here.
    """
    if jax.default_backend() != "gpu":
        raise ValueError(f"attention_kernel='cudnn' runs on an NVIDIA GPU, but JAX's backend is "
                         f"{jax.default_backend()!r}: use attention_kernel='xla'")
    if mask.query_segment_ids is not None:
        raise ValueError("attention_kernel='cudnn' cannot keep packed sequences (segment_ids) apart: "
                         "use attention_kernel='xla'")
    window = (cfg.window, 0) if sparse and cfg.attention == "sliding_window" else None

    def fused(lengths=None):
        return jax.nn.dot_product_attention(query, key, value, is_causal=mask.causal, key_value_seq_lengths=lengths,
                                            local_window_size=window, implementation="cudnn")

    if mask.key_mask is None:
        return fused()
    lengths = mask.key_mask.sum(axis=-1, dtype=jnp.int32)
    right_padded = jnp.all(mask.key_mask == (jnp.arange(key.shape[1]) < lengths[:, None]))
    # A row of padding only would have no key at all; its output is never used, but must not be NaN.
    return jax.lax.cond(right_padded, lambda: fused(jnp.maximum(lengths, 1)),
                        lambda: xla_attention(query, key, value, mask, cfg, dropout=None, sparse=sparse))


@functools.lru_cache(maxsize=64)
def key_blocks(cfg: Config, num_blocks: int, causal: bool) -> np.ndarray:
    """[num_blocks, blocks per row] int: the key blocks that query block i gathers; -1 pads rows near the edges.

    `causal` is the attention's (a decoder's self-attention is causal whatever `cfg.causal` says).
    Random blocks come from a generator seeded by (attention_seed, i), so a causal row's choice does not depend on
    the sequence length and KV-cache decoding sees the pattern of the full forward pass.
    """
    reach = -(-cfg.window // cfg.block_size) if cfg.attention == "sliding_window" else 1
    offsets = range(-reach, 1 if causal else reach + 1)
    num_random = cfg.num_random_blocks if cfg.attention == "block_sparse" else 0
    wholly_global = cfg.global_tokens // cfg.block_size  # every query sees these blocks already
    rows = np.full((num_blocks, len(offsets) + num_random), -1, np.int32)
    for i in range(num_blocks):
        local = [i + o for o in offsets if 0 <= i + o < num_blocks]
        rows[i, :len(local)] = local
        if num_random:
            candidates = [j for j in range(wholly_global, i if causal else num_blocks) if j not in local]
            rng = np.random.default_rng((cfg.attention_seed, i))
            chosen = np.sort(rng.choice(candidates, min(num_random, len(candidates)), replace=False))
            rows[i, len(local):len(local) + len(chosen)] = chosen
    return rows


def pattern_mask(cfg: Config, query_positions, key_positions, causal: bool) -> jax.Array:
    """[queries, keys] bool: where `cfg.attention`'s pattern lets a query see a key (padding and causality aside).

    The dense equivalent of `blockwise_attention`'s pattern; decoding uses it over the KV cache, tests as reference.
    Positions must be below `len(key_positions)` (true of a forward pass and of a KV cache).
    """
    query, key = query_positions[:, None], key_positions[None, :]
    if cfg.attention == "dense":
        return jnp.ones((query.shape[0], key.shape[1]), bool)
    if cfg.attention == "sliding_window":
        allowed = jnp.abs(query - key) <= cfg.window
    else:
        num_blocks = -(-key.shape[1] // cfg.block_size)
        blocks = key_blocks(cfg, num_blocks, causal)
        layout = np.zeros((num_blocks, num_blocks + 1), bool)  # the last column absorbs the -1 padding
        layout[np.arange(num_blocks)[:, None], blocks] = True
        allowed = jnp.asarray(layout[:, :num_blocks])[query // cfg.block_size, key // cfg.block_size]
    return allowed | (query < cfg.global_tokens) | (key < cfg.global_tokens)


def blockwise_attention(query, key, value, mask: AttentionMask, cfg: Config, *, dropout: nn.Dropout | None):
    """Sparse self-attention of [batch, length, heads, head_dim] inputs in O(length * window) time and memory.

    The length is padded to a multiple of `block_size` and the result cut back. Global queries attend densely over
    all keys, which costs global_tokens * length.
    """
    batch, length = query.shape[:2]
    size = cfg.block_size
    num_blocks = -(-length // size)
    num_global = min(cfg.global_tokens, length)
    key_mask = jnp.ones((batch, length), bool) if mask.key_mask is None else mask.key_mask
    segments = jnp.zeros((batch, length), jnp.int32) if mask.query_segment_ids is None else mask.query_segment_ids
    blocks = key_blocks(cfg, num_blocks, mask.causal)
    index = np.where(blocks >= 0, blocks, num_blocks)  # -1 -> an extra empty (fully masked) block

    def in_blocks(x, fill=0):  # [batch, length, ...] -> [batch, num_blocks + 1, size, ...], the last one empty
        padding = [(0, 0), (0, (num_blocks + 1) * size - length)] + [(0, 0)] * (x.ndim - 2)
        return jnp.pad(x, padding, constant_values=fill).reshape(batch, num_blocks + 1, size, *x.shape[2:])

    def gathered(x, fill=0):  # -> [batch, num_blocks, global + gathered keys, ...]: what each query block sees
        local = jnp.take(in_blocks(x, fill), index, axis=1).reshape(batch, num_blocks, -1, *x.shape[2:])
        global_ = jnp.broadcast_to(x[:, None, :num_global], (batch, num_blocks, num_global, *x.shape[2:]))
        return jnp.concatenate([global_, local], axis=2)

    # Positions of each block's queries [num_blocks, size, 1] and of the keys it gathered [num_blocks, 1, keys].
    query_pos = jnp.arange(num_blocks * size).reshape(num_blocks, size, 1)
    local_pos = (jnp.asarray(index)[:, :, None] * size + jnp.arange(size)).reshape(num_blocks, 1, -1)
    key_pos = jnp.concatenate(
        [jnp.broadcast_to(jnp.arange(num_global), (num_blocks, 1, num_global)), local_pos], axis=2)
    is_global_copy = jnp.arange(key_pos.shape[2]) < num_global
    # A gathered key below global_tokens is already among the global copies: see it once.
    allowed = is_global_copy | (key_pos >= num_global)
    if cfg.attention == "sliding_window":
        allowed &= is_global_copy | (jnp.abs(query_pos - key_pos) <= cfg.window)
    if mask.causal:
        allowed &= key_pos <= query_pos
    allowed = (allowed[None] & gathered(key_mask, False)[:, :, None, :]
               & (in_blocks(segments)[:, :num_blocks, :, None] == gathered(segments)[:, :, None, :]))

    def folded(x):  # blocks into the batch: [batch * num_blocks, tokens, heads, head_dim]
        return x.reshape(batch * num_blocks, -1, *x.shape[3:])

    out = dot_product_attention(folded(in_blocks(query)[:, :num_blocks]), folded(gathered(key)),
                                folded(gathered(value)), allowed.reshape(batch * num_blocks, 1, size, -1),
                                dropout=dropout)
    out = out.reshape(batch, num_blocks * size, *out.shape[2:])[:, :length]
    if num_global:
        global_mask = AttentionMask(key_mask, segments[:, :num_global], segments, causal=mask.causal)
        global_out = dot_product_attention(query[:, :num_global], key, value,
                                           global_mask.dense(num_global, length), dropout=dropout)
        out = out.at[:, :num_global].set(global_out)
    return out


def rolling_cache(cfg: Config) -> bool:
    """Whether the KV cache rolls (a sliding window: new tokens overwrite the oldest), so that a call's queries attend
    over the cache as it was, followed by the new tokens (a new token may overwrite a key that a query of the same
    call still sees). Otherwise a slot is written once and the queries attend over the cache after the write, which
    spares a copy of the whole cache at every step."""
    return cfg.attention == "sliding_window"


def cache_length(cfg: Config, length: int) -> int:
    """Slots of a KV cache that decodes `length` tokens: all of them, or, for a sliding window, the global tokens and
    the last `window` (a rolling cache: memory flat in the generated length; decoding is causal)."""
    if rolling_cache(cfg):
        return min(length, cfg.global_tokens + cfg.window)
    return length


def cache_slots(cfg: Config, slots: int, positions) -> jax.Array:
    """Where the tokens at `positions` ([new], consecutive) go in a cache of `slots`: slot = position, or in a rolling
    cache global tokens first and the rest round-robin. A token a later one of the same call overwrites gets slot
    `slots`, which a scatter with mode="drop" skips."""
    num_global = min(cfg.global_tokens, slots)
    rolling = max(slots - num_global, 1)
    slot = jnp.where(positions < num_global, positions, num_global + (positions - num_global) % rolling)
    kept = (positions < num_global) | (positions > positions[-1] - rolling)
    return jnp.where(kept, slot, slots)
