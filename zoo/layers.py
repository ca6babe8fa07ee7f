"""The blocks every zoo model is made of: projections, LayerNorm, attention, feed-forward, a layer and a stack.

Every parameter carries logical axis names (vocab, embed, heads, kv, mlp, layers) so `train/` can shard any model
by rules; nothing here knows about devices.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from zoo.attention import attend, cache_length, heads_first, rolling_cache
from zoo.axes import BATCH, EMBED, HEAD_DIM, HEADS, LAYERS, LENGTH, MLP
from zoo.config import Config
from zoo.masks import AttentionMask
from zoo.rotary import apply_rotary, rotary_embedding

# The name of each attention block's output (before its out projection), which remat="attention" saves.
ATTENTION_OUTPUT = "attention_output"
# What the backward pass keeps of a layer's forward pass under each `Config.remat` (the rest is recomputed); the
# planned memory and FLOPs of each are measured in bench/remat.py.
REMAT_POLICY = {
    "full": jax.checkpoint_policies.nothing_saveable,  # only the layer's input
    "dots": jax.checkpoint_policies.checkpoint_dots,  # every matmul's output
    # the matmuls with weights (no batch dimension): not attention's scores and weighted sums, which grow with L^2
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "attention": jax.checkpoint_policies.save_only_these_names(ATTENTION_OUTPUT),  # recompute all but attention
}

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT: the exact erf form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # GPT-2 and ALBERT ("gelu_new")
    "relu": jax.nn.relu,
    "swish": jax.nn.silu,
}
# A gated linear unit (Shazeer 2020) is the gate's activation times a linear branch: each gated name says which.
GATES = {"gated_gelu": "gelu_tanh", "gated_silu": "swish"}  # T5 v1.1 / Flan-T5 ("gelu_new"); SwiGLU (Llama)
# What the entries of a fused projection's first output axis compute, for LoRA's targets (see DenseGeneral).
FUSED_PARTS = {"qkv": ("query", "key", "value"), "key_value": ("key", "value")}


class DenseGeneral(nn.Module):
    """x contracted over `axis` with a kernel [*x.shape[axis], *features], plus a bias [*features] if `use_bias`.

    Flax's DenseGeneral initialises a flat kernel and reshapes it, which breaks its own logical sharding
    constraint under a mesh; this one creates the kernel in its real shape.

    `lora_parts` names what the projection computes, for LoRA (Hu et al. 2021): one name (the whole output), or one
    per entry of the first output axis of a fused projection (("query", "key", "value") for `qkv`). A part named in
    `config.lora_targets` gets, when `config.lora_rank` > 0, a low-rank update `x @ lora_a_<part> @ lora_b_<part>`
    added to its output, scaled by lora_alpha / lora_rank and with `lora_dropout` on its input; `lora_b` starts at
    zero, so an adapted model computes exactly what its base does until it trains.
    """

    features: tuple[int, ...]
    axis: tuple[int, ...]
    kernel_axes: tuple
    config: Config
    use_bias: Optional[bool] = None  # None: config.use_bias
    lora_parts: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.config
        axis = tuple(a % x.ndim for a in self.axis)
        init = nn.initializers.normal(cfg.initializer_range)
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                            tuple(x.shape[a] for a in axis) + self.features, cfg.param_dtype)
        x, kernel = x.astype(cfg.dtype), kernel.astype(cfg.dtype)
        contract = ((axis, tuple(range(len(axis)))), ((), ()))
        y = jax.lax.dot_general(x, kernel, contract)
        if cfg.lora_rank and set(self.lora_parts) & set(cfg.lora_targets):
            y = y + self._lora(x, axis, contract, deterministic)
        if not (cfg.use_bias if self.use_bias is None else self.use_bias):  # T5, Llama
            return y
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                               self.kernel_axes[len(axis):]),
                          self.features, cfg.param_dtype)
        return y + bias.astype(cfg.dtype)

    def _lora(self, x, axis, contract, deterministic):
        """The adapters' updates of the output, [*batch axes, *features]: zero for the parts without one."""
        cfg = self.config
        inputs, fused = tuple(x.shape[a] for a in axis), len(self.lora_parts) > 1
        part_features, part_axes = ((self.features[1:], self.kernel_axes[len(axis) + 1:]) if fused
                                    else (self.features, self.kernel_axes[len(axis):]))
        # peft's init: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform with a = sqrt(5)), B = 0
        a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=tuple(range(len(axis))),
                                                  out_axis=-1)
        x = nn.Dropout(cfg.lora_dropout, deterministic=deterministic)(x)
        batch_shape = x.shape[:x.ndim - len(axis)]
        updates = []
        for part in self.lora_parts:
            if part not in cfg.lora_targets:
                updates.append(jnp.zeros((*batch_shape, *part_features), cfg.dtype))
                continue
            a = self.param(f"lora_a_{part}", nn.with_logical_partitioning(
                a_init, (*self.kernel_axes[:len(axis)], None)), (*inputs, cfg.lora_rank), cfg.param_dtype)
            b = self.param(f"lora_b_{part}", nn.with_logical_partitioning(nn.initializers.zeros, (None, *part_axes)),
                           (cfg.lora_rank, *part_features), cfg.param_dtype)
            low = jax.lax.dot_general(x, a.astype(cfg.dtype), contract)  # [*batch axes, rank]
            updates.append(jnp.tensordot(low, b.astype(cfg.dtype), axes=1) * (cfg.lora_alpha / cfg.lora_rank))
        return jnp.stack(updates, axis=-len(self.features)) if fused else updates[0]


def dense(cfg: Config, features: int | Sequence[int], kernel_axes: tuple, *, axis=-1, name: str,
          use_bias: Optional[bool] = None, lora: tuple[str, ...] = ()) -> DenseGeneral:
    """A projection whose kernel is named by `kernel_axes` (input axes, then output axes), with a bias when `use_bias`
    (None: `cfg.use_bias`); `lora` names its parts for LoRA (see `DenseGeneral`)."""
    features = (features,) if isinstance(features, int) else tuple(features)
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return DenseGeneral(features, axis, kernel_axes, cfg, use_bias, lora, name=name)


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

    With grouped-query attention (`config.num_kv_heads` below num_heads) self-attention projects the queries
    (`query`) apart from the fewer keys and values (`key_value`), and the cache holds only the key/value heads.
    `rotary` (cos, sin from `zoo.rotary.rotary_embedding`) rotates self-attention's queries and keys before the cache.

    In decode mode the new keys and values of self-attention are written into the cache at `cache_slots` (see
    `zoo.attention.cache_slots`) and the queries attend over the cache (a rolling cache: over the cache before the
    write followed by the new tokens); `mask` covers those keys, as `zoo.models.DecodeState` builds it. The
    cache is heads first, [batch, kv_heads, slots, head_dim] (`zoo.attention.cache_attention` reads it).
    Cross-attention in decode mode caches the source's keys and values instead: a call given `encoded` (the first
    of a generation) projects and stores them, a call with `encoded=None` reads them and projects nothing.
    """

    config: Config
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask: AttentionMask, encoded=None, *, deterministic: bool, decode: bool = False,
                 cache_slots=None, rotary=None):
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)
        bias = cfg.use_bias or cfg.attention_qkv_bias
        if self.cross_attention:
            query = dense(cfg, heads, (EMBED, HEADS, HEAD_DIM), name="query", use_bias=bias,
                          lora=("query",))(x, deterministic)
            key_value = dense(cfg, (2, *heads), (EMBED, None, HEADS, HEAD_DIM), name="key_value", use_bias=bias,
                              lora=FUSED_PARTS["key_value"])
            key, value = self._source_keys_values(functools.partial(key_value, deterministic=deterministic), encoded,
                                                  decode)
        else:
            if cfg.kv_heads == cfg.num_heads:
                qkv = dense(cfg, (3, *heads), (EMBED, None, HEADS, HEAD_DIM), name="qkv", use_bias=bias,
                            lora=FUSED_PARTS["qkv"])(x, deterministic)
                query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [batch, length, heads, head_dim]
            else:  # grouped-query: key and value [batch, length, kv_heads, head_dim]
                query = dense(cfg, heads, (EMBED, HEADS, HEAD_DIM), name="query", use_bias=bias,
                              lora=("query",))(x, deterministic)
                kv = dense(cfg, (2, cfg.kv_heads, cfg.head_dim), (EMBED, None, HEADS, HEAD_DIM), name="key_value",
                           use_bias=bias, lora=FUSED_PARTS["key_value"])(x, deterministic)
                key, value = kv[:, :, 0], kv[:, :, 1]
            if rotary is not None:
                query, key = apply_rotary(query, rotary), apply_rotary(key, rotary)
            if decode:
                key, value = self._update_cache(key, value, cache_slots)
        use_dropout = not deterministic and cfg.attention_dropout_rate > 0
        dropout = nn.Dropout(cfg.attention_dropout_rate, deterministic=False) if use_dropout else None
        out = attend(query, key, value, mask, cfg, dropout=dropout, sparse=not self.cross_attention, decode=decode)
        out = checkpoint_name(out, ATTENTION_OUTPUT)  # [batch, length, heads, head_dim]: what remat="attention" keeps
        return dense(cfg, cfg.hidden_size, (HEADS, HEAD_DIM, EMBED), axis=(-2, -1), name="out",
                     lora=("out",))(out, deterministic)

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
        if decode:  # stored heads first, as every decoding step reads them (see `_update_cache`)
            key, value = heads_first(key), heads_first(value)
            # logical axis names, as parameters carry them, so that the cache shards by the same rules
            zeros = nn.with_logical_partitioning(jnp.zeros, (BATCH, HEADS, LENGTH, HEAD_DIM))
            self.variable("cache", "key", zeros, key.shape, key.dtype).value = key
            self.variable("cache", "value", zeros, value.shape, value.dtype).value = value
        return key, value

    def _update_cache(self, key, value, cache_slots):
        """Writes the new keys and values into the cache -> the keys and values the queries attend over, each [batch,
        kv_heads, keys, head_dim]: the cache after the write, or for a rolling cache (`rolling_cache`) the cache
        before it followed by the new ones.

        The cache holds each head's keys contiguously, heads first: a decoding step reads every slot of every head,
        and XLA's CPU matmul over [batch, slots, heads, head_dim] first copied the whole cache into this order (twice
        the time per token at 2,048 slots)."""
        key, value = heads_first(key), heads_first(value)
        initialized = self.has_variable("cache", "key")
        shape = (*key.shape[:2], cache_length(self.config, key.shape[2]), key.shape[3])
        cached_key = self.variable("cache", "key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "value", jnp.zeros, shape, value.dtype)
        if not initialized:  # the call that sizes the cache: attend over the input itself
            return key, value
        key, value = key.astype(cached_key.value.dtype), value.astype(cached_value.value.dtype)
        before = cached_key.value, cached_value.value
        cached_key.value = cached_key.value.at[:, :, cache_slots].set(key, mode="drop")
        cached_value.value = cached_value.value.at[:, :, cache_slots].set(value, mode="drop")
        if rolling_cache(self.config):
            return jnp.concatenate([before[0], key], axis=2), jnp.concatenate([before[1], value], axis=2)
        return cached_key.value, cached_value.value


class FeedForward(nn.Module):
    """wo(dropout(act(wi x))); for a gated activation wo(dropout(act(wi_0 x) * wi_1 x))."""

    config: Config

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        cfg = self.config
        if cfg.activation in GATES:
            gate = dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi_0", lora=("wi_0",))(x, deterministic)
            linear = dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi_1", lora=("wi_1",))(x, deterministic)
            h = ACTIVATIONS[GATES[cfg.activation]](gate) * linear
        else:
            h = ACTIVATIONS[cfg.activation](dense(cfg, cfg.intermediate_size, (EMBED, MLP), name="wi",
                                                  lora=("wi",))(x, deterministic))
        h = nn.with_logical_constraint(h, (BATCH, LENGTH, MLP))
        rate = cfg.dropout_rate if cfg.activation_dropout_rate is None else cfg.activation_dropout_rate
        h = nn.Dropout(rate, deterministic=deterministic)(h)
        return dense(cfg, cfg.hidden_size, (MLP, EMBED), name="wo", lora=("wo",))(h, deterministic)


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each inside a residual with pre- or post-LayerNorm."""

    config: Config
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, encoded=None, cross_mask=None, cache_slots=None, rotary=None,
                 deterministic: bool = True, decode: bool = False):
        cfg = self.config
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
        x = self.residual(x, "attention", lambda h: MultiHeadAttention(cfg, name="attention")(
            h, mask, deterministic=deterministic, decode=decode, cache_slots=cache_slots, rotary=rotary),
            deterministic)
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
    the bucket of each key - query distance (initialised at ALiBi's slopes with `relative_attention_alibi_init`). A
    stack builds it once from its mask's positions (in KV-cache decoding the queries' positions follow the cache) and
    every layer adds it to its self-attention logits."""

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
        bias = jnp.transpose(table[buckets], (2, 0, 1))[None].astype(jnp.float32)  # [1, heads, queries, keys]
        if cfg.relative_attention_untie_first and self.bidirectional:
            first = self.param("first_token", nn.with_logical_partitioning(nn.initializers.zeros, (None, HEADS)),
                               (2, cfg.num_heads), cfg.param_dtype).astype(jnp.float32)  # [from it / to it, heads]
            is_first_query = (query_positions == 0)[None, None, :, None]
            is_first_key = (key_positions == 0)[None, None, None, :]
            bias = jnp.where(is_first_key, first[1][None, :, None, None], bias)
            bias = jnp.where(is_first_query, first[0][None, :, None, None], bias)
        return bias


class LayerStack(nn.Module):
    """`num_layers` TransformerLayers: unrolled, scanned (`scan_layers`), or one shared layer (`share_layers`).

    `positions` [batch, length] are the tokens' positions, which rotary position embeddings read (once here, for
    every layer); None means 0, 1, ... in every row.
    """

    config: Config
    num_layers: int
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, mask, encoded=None, cross_mask=None, cache_slots=None, *, deterministic: bool,
                 decode: bool = False, positions=None):
        cfg = self.config
        rotary = None
        if cfg.position_embedding == "rotary":  # the angles of every token, once for all layers
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
            rotary = rotary_embedding(cfg, positions)
        if cfg.position_embedding == "relative_bias":  # built once here, shared by every layer's self-attention
            length = x.shape[1]
            bias = RelativePositionBias(cfg, bidirectional=not mask.causal, name="relative_position_bias")(
                *mask.positions(length, length))
            mask = mask.replace(bias=bias)
        layer = TransformerLayer
        if cfg.remat != "none":
            policy = REMAT_POLICY[cfg.remat]
            # argnums count `self`: 7 and 8 are the Python flags deterministic and decode
            layer = nn.remat(layer, policy=policy, static_argnums=(7, 8))
        args = (mask, encoded, cross_mask, cache_slots, rotary, deterministic, decode)
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
