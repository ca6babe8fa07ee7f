"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer"), in the rotate-half layout of the public Llama,
Mistral and Qwen2 checkpoints: dimension i of a head is paired with dimension i + head_dim/2, and the pair is rotated
by position * frequency_i. A query and a key rotated by their positions then score by their distance alone.

A stack computes the angles once from its token positions (`rotary_embedding`) and every self-attention layer rotates
its queries and keys with them (`apply_rotary`) before the keys enter the KV cache, so a cached key keeps the position
it was written at.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import Config


def rotary_frequencies(cfg: Config) -> np.ndarray:
    """[head_dim // 2] float32 inverse frequencies rope_theta^(-2i/head_dim), scaled by `cfg.rope_scaling`.

    Computed in float32 as transformers computes them (`ROPE_INIT_FUNCTIONS`), so the angles round alike.
    """
    dim = cfg.head_dim
    inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))))
    inv_freq = inv_freq.astype(np.float32)
    scaling = cfg.rope_scaling
    if scaling is None:
        return inv_freq
    if scaling.type == "linear":
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    # llama3: long wavelengths interpolated by `factor`, short ones kept, a smooth blend between
    low_freq_wavelen = scaling.original_max_length / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_length / scaling.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(scaling.factor), inv_freq).astype(np.float32)
    smooth = ((scaling.original_max_length / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(scaling.factor) + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rotary_embedding(cfg: Config, positions) -> tuple[jax.Array, jax.Array]:
    """(cos, sin), each [batch, length, head_dim] float32, of the tokens at `positions` [batch, length]: the angles
    position * frequency, the half of frequencies repeated for the two halves of a head."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(rotary_frequencies(cfg))  # [batch, length, dim/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x):
    """[..., head_dim] -> (-second half, first half): a quarter turn of each pair (i, i + head_dim/2)."""
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rotary(x, rotary: tuple[jax.Array, jax.Array]):
    """`x` [batch, length, heads, head_dim] rotated by `rotary` (cos, sin of `rotary_embedding`), in float32, returned
    in x's dtype."""
    cos, sin = (r[:, :, None, :] for r in rotary)  # [batch, length, 1, head_dim]: the same for every head
    x32 = x.astype(jnp.float32)
    return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
