"""The blocks every zoo model is made of: projections, LayerNorm, attention, feed-forward, a layer and a stack.

Every parameter carries logical axis names (vocab, embed, heads, kv, mlp, layers) so `train/` can shard any model
by rules; nothing here knows about devices.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.attention import attend, cache_length
from zoo.axes import BATCH, EMBED, HEAD_DIM, HEADS, LAYERS, LENGTH, MLP
from zoo.config import Config
from zoo.masks import AttentionMask

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT: the exact erf form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # GPT-2 and ALBERT ("gelu_new")
    "relu": jax.nn.relu,
    "swish": jax.nn.silu,
}
# A gated linear unit (Shazeer 2020) is the gate's activation times a linear branch: each gated name says which.
GATES = {"gated_gelu": "gelu_tanh", "gated_silu": "swish"}  # T5 v1.1 / Flan-T5 ("gelu_new"); SwiGLU (Llama)


class DenseGeneral(nn.Module):
    """x contracted over `axis` with a kernel [*x.shape[axis], *features], plus a bias [*features] if `use_bias`.

    Flax's DenseGeneral initialises a flat kernel and reshapes it, which breaks its own logical sharding
    constraint under a mesh; this one creates the kernel in its real shape.
    """

    features: tuple[int, ...]
    axis: tuple[int, ...]
    kernel_axes: tuple
    config: Config

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        axis = tuple(a % x.ndim for a in self.axis)
        init = nn.initializers.normal(cfg.initializer_range)
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                            tuple(x.shape[a] for a in axis) + self.features, cfg.param_dtype)
        x, kernel = x.astype(cfg.dtype), kernel.astype(cfg.dtype)
        y = jax.lax.dot_general(x, kernel, ((axis, tuple(range(len(axis)))), ((), ())))
        if not cfg.use_bias:  # T5
            return y
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                               self.kernel_axes[len(axis):]),
                          self.features, cfg.param_dtype)
        return y + bias.astype(cfg.dtype)


def dense(cfg: Config, features: int | Sequence[int], kernel_axes: tuple, *, axis=-1, name: str) -> DenseGeneral:
    """A projection with bias whose kernel is named by `kernel_axes` (input axes, then output axes)."""
    features = (features,) if isinstance(features, int) else tuple(features)
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return DenseGeneral(features, axis, kernel_axes, cfg, name=name)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale over the last axis (Zhang & Sennrich 2019; T5's T5LayerNorm): no mean
    subtraction, no bias; statistics in float32 whatever the compute dtype."""

    config: Config
    axis_name: str = EMBED

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), cfg.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + cfg.layer_norm_eps)
        return x32.astype(cfg.dtype) * scale.astype(cfg.dtype)


def layer_norm(cfg: Config, name: str, axis_name: str = EMBED) -> nn.Module:
    """`cfg.norm`'s normalisation: LayerNorm or RMSNorm. Both keep their statistics in float32."""
    if cfg.norm == "rms":
        return RMSNorm(cfg, axis_name, name=name)
    # Statistics in float32 whatever the compute dtype: bf16 means and variances lose the small differences.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)),
        name=name,
    )


class MultiHeadAttention(nn.Module):
    """Self-attention (one fused q/k/v projection, `config.attention`'s pattern) or cross-attention over `encoded`.

    In decode mode the new keys and values of self-attention join the cached ones, and are then written into the
    cache at `cache_slots` (see `zoo.attention.cache_slots`); `mask` covers the cache followed by the new tokens.
    Cross-attention in decode mode caches the source's keys and values instead: a call given `encoded` (the first
    of a generation) projects and stores them, a call with `encoded=None` reads them and projects nothing.
    """

    config: Config
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask: AttentionMask, encoded=None, *, deterministic: bool, decode: bool = False,
                 cache_slots=None):
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)
        if self.cross_attention:
            query = dense(cfg, heads, (EMBED, HEADS, HEAD_DIM), name="query")(x)
            key_value = dense(cfg, (2, *heads), (EMBED, None, HEADS, HEAD_DIM), name="key_value")
            key, value = self._source_keys_values(key_value, encoded, decode)
        else:
            qkv = dense(cfg, (3, *heads), (EMBED, None, HEADS, HEAD_DIM), name="qkv")(x)
            query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [batch, length, heads, head_dim]
            if decode:
                key, value = self._update_cache(key, value, cache_slots)
        use_dropout = not deterministic and cfg.attention_dropout_rate > 0
        dropout = nn.Dropout(cfg.attention_dropout_rate, deterministic=False) if use_dropout else None
        out = attend(query, key, value, mask, cfg, dropout=dropout, sparse=not self.cross_attention, decode=decode)
        return dense(cfg, cfg.hidden_size, (HEADS, HEAD_DIM, EMBED), axis=(-2, -1), name="out")(out)

    def _source_keys_values(self, key_value, encoded, decode):
        """-> (keys, values) of the source, each [batch, source_length, heads, head_dim]: `key_value` applied to
        `encoded`, or in decode mode without `encoded`, the ones a first call stored in the cache."""
        if encoded is None:
            if not (decode and self.has_variable("cache", "key")):
                raise ValueError("cross-attention without `encoded` reads the source's keys and values from the "
                                 "cache: pass decode=True and a cache (zoo.init_cache) that a call given `encoded` "
                                 "has filled")
            return self.variable("cache", "key").value, self.variable("cache", "value").value
        kv = key_value(encoded)
        key, value = kv[:, :, 0], kv[:, :, 1]
        if decode:
            # logical axis names, as parameters carry them, so that the cache shards by the same rules
            zeros = nn.with_logical_partitioning(jnp.zeros, (BATCH, LENGTH, HEADS, HEAD_DIM))
            self.variable("cache", "key", zeros, key.shape, key.dtype).value = key
            self.variable("cache", "value", zeros, value.shape, value.dtype).value = value
        return key, value

    def _update_cache(self, key, value, cache_slots):
        """-> (cached then new keys, cached then new values); the new ones are written into the cache."""
        initialized = self.has_variable("cache", "key")
        shape = (key.shape[0], cache_length(self.config, key.shape[1]), *key.shape[2:])
        cached_key = self.variable("cache", "key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "value", jnp.zeros, shape, value.dtype)
        if not initialized:  # the call that sizes the cache: attend over the input itself
            return key, value
        key, value = key.astype(cached_key.value.dtype), value.astype(cached_value.value.dtype)
        keys = jnp.concatenate([cached_key.value, key], axis=1)
        values = jnp.concatenate([cached_value.value, value], axis=1)
        cached_key.value = cached_key.value.at[:, cache_slots].set(key, mode="drop")
        cached_value.value = cached_value.value.at[:, cache_slots].set(value, mode="drop")
        return keys, values


class FeedForward(nn.Module):
    """wo(act(wi x)); for a gated activation wo(act(wi_0 x) * wi_1 x)."""

    config: Config

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        cfg = self.config
        if cfg.activation in GATES:
            gate = dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi_0")(x)
            linear = dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi_1")(x)
            h = ACTIVATIONS[GATES[cfg.activation]](gate) * linear
        else:
            h = ACTIVATIONS[cfg.activation](dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi")(x))
        h = nn.with_logical_constraint(h, (BATCH, LENGTH, MLP))
        return dense(cfg, cfg.hidden_size, (MLP, EMBED), name="wo")(h)


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each inside a residual with pre- or post-LayerNorm."""

    config: Config
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, encoded=None, cross_mask=None, cache_slots=None, deterministic: bool = True,
                 decode: bool = False):
        cfg = self.config
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
        x = self.residual(x, "attention", lambda h: MultiHeadAttention(cfg, name="attention")(
            h, mask, deterministic=deterministic, decode=decode, cache_slots=cache_slots), deterministic)
        if self.cross_attention:
            cross_attention = MultiHeadAttention(cfg, cross_attention=True, name="cross_attention")
            x = self.residual(x, "cross_attention", lambda h: cross_attention(
                h, cross_mask, encoded, deterministic=deterministic, decode=decode), deterministic)
        return self.residual(
            x, "mlp", lambda h: FeedForward(cfg, name="mlp")(h, deterministic=deterministic), deterministic)

    def residual(self, x, name, sublayer, deterministic):
        """The one place that knows pre- vs post-LayerNorm."""
        cfg = self.config
        norm = layer_norm(cfg, name=f"{name}_norm")
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
        if cfg.norm_position == "pre":  # GPT-2: normalise the sublayer's input, keep a clean residual path
            return x + dropout(sublayer(norm(x)))
        return norm(x + dropout(sublayer(x)))  # BERT, Vaswani et al.: normalise after the sum


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int, max_distance: int,
                             xp=jnp):
    """T5's bucket (Raffel et al. 2020) of `relative_position` = key - query: exact for small distances, then
    logarithmic up to `max_distance`; bidirectional buckets keep half for keys after the query, causal ones map keys
    after the query to bucket 0. `xp=np` computes it in NumPy (for an initialiser, outside any trace)."""
    buckets = xp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = xp.abs(relative_position)
    else:
        distance = -xp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    log_ratio = xp.log(xp.maximum(distance, 1).astype(xp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = xp.minimum(large, num_buckets - 1)
    return buckets + xp.where(distance < max_exact, distance, large)


def alibi_bias_table(cfg: Config, bidirectional: bool) -> np.ndarray:
    """[buckets, heads] float32: `relative_attention_alibi_init` times ALiBi's bias (Press et al. 2022), -slope_h *
    distance with slope_h = 2^(-8h/heads) for heads h = 1..heads; a bucket stands for the smallest distance it holds
    (0 for a bucket that no distance reaches)."""
    relative = np.arange(-cfg.relative_attention_max_distance, cfg.relative_attention_max_distance + 1)
    buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                       num_buckets=cfg.relative_attention_num_buckets,
                                       max_distance=cfg.relative_attention_max_distance, xp=np)
    distance = np.full(cfg.relative_attention_num_buckets, np.inf)
    np.minimum.at(distance, buckets, np.abs(relative).astype(np.float64))
    distance[np.isinf(distance)] = 0.0
    slopes = 2.0 ** (-8.0 * np.arange(1, cfg.num_heads + 1) / cfg.num_heads)
    return (-cfg.relative_attention_alibi_init * distance[:, None] * slopes[None, :]).astype(np.float32)


class RelativePositionBias(nn.Module):
    """[1, heads, queries, keys] bias of `position_embedding="relative_bias"`: a learned [buckets, heads] table read at
    the bucket of each key - query distance (initialised at ALiBi's slopes with `relative_attention_alibi_init`). A stack builds it once from its mask's positions (in KV-cache decoding
    the queries' positions follow the cache) and every layer adds it to its self-attention logits."""

    config: Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions, key_positions):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        if cfg.relative_attention_alibi_init:
            alibi = alibi_bias_table(cfg, self.bidirectional)
            init = lambda key, shape, dtype: jnp.asarray(alibi, dtype)
        table = self.param("embedding", nn.with_logical_partitioning(init, (None, HEADS)),
                           (cfg.relative_attention_num_buckets, cfg.num_heads), cfg.param_dtype)
        buckets = relative_position_bucket(key_positions[None, :] - query_positions[:, None],
                                           bidirectional=self.bidirectional,
                                           num_buckets=cfg.relative_attention_num_buckets,
                                           max_distance=cfg.relative_attention_max_distance)
        return jnp.transpose(table[buckets], (2, 0, 1))[None].astype(jnp.float32)


class LayerStack(nn.Module):
    """`num_layers` TransformerLayers: unrolled, scanned (`scan_layers`), or one shared layer (`share_layers`)."""

    config: Config
    num_layers: int
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, encoded=None, cross_mask=None, cache_slots=None, *, deterministic: bool,
                 decode: bool = False):
        cfg = self.config
        if cfg.position_embedding == "relative_bias":  # built once here, shared by every layer's self-attention
            length = x.shape[1]
            bias = RelativePositionBias(cfg, bidirectional=not mask.causal, name="relative_position_bias")(
                *mask.positions(length, length))
            mask = mask.replace(bias=bias)
        layer = TransformerLayer
        if cfg.remat != "none":
            policy = {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots}[cfg.remat]
            # argnums count `self`: 6 and 7 are the Python flags deterministic and decode
            layer = nn.remat(layer, policy=policy, static_argnums=(6, 7))
        args = (mask, encoded, cross_mask, cache_slots, deterministic, decode)
        if cfg.scan_layers or cfg.share_layers:
            # ALBERT shares one set of weights across layers: broadcast params instead of stacking them.
            shared = cfg.share_layers
            scanned = nn.scan(
                lambda module, carry, *a: (module(carry, *a), None),
                variable_axes={"cache": 0} if shared else {"params": 0, "cache": 0},
                variable_broadcast="params" if shared else False,
                split_rngs={"params": not shared, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )
            x, _ = scanned(layer(cfg, self.cross_attention, name="layers"), x, *args)
            return x
        for i in range(self.num_layers):
            x = layer(cfg, self.cross_attention, name=f"layers_{i}")(x, *args)
        return x



def stack_layer_params(stack_params: dict, num_layers: int) -> dict:
    """{layers_0: p0, ..., layers_N-1: pN-1} -> {layers: p with a leading layer axis}: unrolled to `scan_layers`."""
    layers = [stack_params[f"layers_{i}"] for i in range(num_layers)]
    return {"layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
