"""Attention masks, built once at the top of a forward pass and passed down to every layer.

A mask is boolean, True where a query may attend to a key, shaped [batch, 1, query_length, key_length] or
broadcastable to it. The attention turns False into a large negative finite logit (never -inf, which would make a
fully masked row NaN).
"""

from __future__ import annotations

import jax.numpy as jnp


def make_attention_mask(
    key_mask: jnp.ndarray | None,
    *,
    query_length: int,
    causal: bool = False,
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
) -> jnp.ndarray | None:
    """Combines padding, causal and segment masks into one.

    Args:
      key_mask: [batch, key_length], nonzero at real keys (the `attention_mask` of the public checkpoints).
      query_length: number of queries.
      causal: query i may only see keys j <= i (needs query_length == key_length).
      query_segment_ids, key_segment_ids: [batch, length]; a query sees only keys of its own segment, so packed
        documents never attend to each other.

    Returns:
      [batch or 1, 1, query_length or 1, key_length] bool, or None when nothing is masked.
    """
    mask = None
    if key_mask is not None:
        mask = (key_mask != 0)[:, None, None, :]
    if causal:
        positions = jnp.arange(query_length)
        mask = _and(mask, (positions[:, None] >= positions[None, :])[None, None])
    if query_segment_ids is not None:
        same_segment = query_segment_ids[:, None, :, None] == key_segment_ids[:, None, None, :]
        mask = _and(mask, same_segment)
    return mask


def _and(a, b):
    return b if a is None else jnp.logical_and(a, b)
