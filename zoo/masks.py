"""Which keys each query may see, built once at the top of a forward pass and passed down to every layer.

The mask is kept in pieces (key padding, segments, positions, causality) rather than as one [queries, keys] matrix,
so that sparse attention (`zoo.attention`) can build only the blocks it computes. Dense attention asks for the
matrix with `AttentionMask.dense`. False becomes a large negative finite logit (never -inf, which would make a fully
masked row NaN).
"""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class AttentionMask:
    """Padding, packing and causal masks of one attention, in pieces.

    Attributes:
      key_mask: [batch, keys] bool, True at real keys (the `attention_mask` of the public checkpoints); None: all.
      query_segment_ids, key_segment_ids: [batch, queries] and [batch, keys]; a query sees only keys of its own
        segment, so packed documents never attend to each other. None: one segment.
      query_positions, key_positions: [queries] and [keys] int, each token's index in the sequence. None means
        0, 1, ...; they differ only in KV-cache decoding, where the queries follow the cache and a cache slot holds
        whichever earlier position was written there.
      causal: a query sees only keys at positions <= its own.
      bias: [1, heads, queries, keys] float added to the attention logits (T5's relative position bias, built once
        per stack by `zoo.layers.RelativePositionBias`); None: no bias.
    """

    key_mask: Optional[jax.Array] = None
    query_segment_ids: Optional[jax.Array] = None
    key_segment_ids: Optional[jax.Array] = None
    query_positions: Optional[jax.Array] = None
    key_positions: Optional[jax.Array] = None
    bias: Optional[jax.Array] = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)

    @classmethod
    def from_padding(cls, attention_mask, *, causal: bool = False, segment_ids=None) -> "AttentionMask":
        """From `attention_mask` [batch, keys], nonzero at real tokens; `segment_ids` only for self-attention."""
        key_mask = None if attention_mask is None else attention_mask != 0
        return cls(key_mask, segment_ids, segment_ids, causal=causal)

    def positions(self, query_length: int, key_length: int) -> tuple[jax.Array, jax.Array]:
        """([queries], [keys]) positions, filling in 0, 1, ... where none were given."""
        query = jnp.arange(query_length) if self.query_positions is None else self.query_positions
        key = jnp.arange(key_length) if self.key_positions is None else self.key_positions
        return query, key

    def dense(self, query_length: int, key_length: int) -> jax.Array:
        """[batch or 1, 1, queries, keys] bool: True where a query may attend to a key."""
        mask = jnp.ones((1, 1, query_length, key_length), bool)
        if self.key_mask is not None:
            mask = mask & self.key_mask[:, None, None, :]
        if self.causal:
            query, key = self.positions(query_length, key_length)
            mask = mask & (key[None, :] <= query[:, None])[None, None]
        if self.query_segment_ids is not None:
            mask = mask & (self.query_segment_ids[:, None, :, None] == self.key_segment_ids[:, None, None, :])
        return mask
