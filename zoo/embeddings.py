"""Token, position and token-type embeddings, with ALBERT's factorized projection."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zoo.axes import BATCH, EMBED, LENGTH, VOCAB
from zoo.config import Config
from zoo.layers import dense, layer_norm


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """Vaswani et al.'s table: sin(p / 10000^(2i/d)) in the first half, cos of the same in the second. [length, dim]

    Computed in float64 and rounded once, as the public Marian checkpoints do; the halves are concatenated rather than
    interleaved (as in tensor2tensor and Marian), which is the same encoding up to a fixed permutation of dimensions.
    """
    inv_freq = 1.0 / np.power(10000.0, 2 * np.arange(dim // 2) / dim)
    angles = np.arange(length)[:, None] * inv_freq[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def padding_offset_position_ids(input_ids, pad_token_id: int):
    """RoBERTa's positions, as transformers' `create_position_ids_from_input_ids` (fairseq's `make_positions`) numbers
    them: real tokens count from pad_token_id + 1, pad tokens (found in the ids, not the mask) sit at pad_token_id.
    [batch, length] -> [batch, length]"""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + pad_token_id


def token_embedding(cfg: Config, name: str = "token_embedding") -> nn.Embed:
    return nn.Embed(
        cfg.vocab_size,
        cfg.embedding_dim,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), (VOCAB, EMBED)),
        name=name,
    )


class Embeddings(nn.Module):
    """Sum of token, position and token-type embeddings, then LayerNorm, dropout, and the factorized projection.

    `tokens` is passed in so that the output head (and the other stack of an encoder-decoder) can share it.
    """

    config: Config
    tokens: nn.Embed

    @nn.compact
    def __call__(self, input_ids, position_ids, token_type_ids=None, *, deterministic: bool):
        cfg = self.config
        x = self.tokens(input_ids)
        if cfg.scale_embeddings:
            x = x * jnp.sqrt(jnp.asarray(cfg.hidden_size, x.dtype))
        if cfg.position_embedding == "learned":
            x = x + nn.Embed(
                cfg.max_length, cfg.embedding_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.initializer_range), (None, EMBED)),
                name="position_embedding")(position_ids + cfg.position_offset)
        elif cfg.position_embedding == "sinusoidal":
            table = jnp.asarray(sinusoidal_positions(cfg.max_length, cfg.embedding_dim), cfg.dtype)
            x = x + table[position_ids]
        # "relative_bias" and "rotary" add nothing here (zoo.layers applies them in attention), "none" nowhere
        if cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + nn.Embed(
                cfg.type_vocab_size, cfg.embedding_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.initializer_range), (None, EMBED)),
                name="token_type_embedding")(token_type_ids)
        if cfg.embedding_norm:
            x = layer_norm(cfg, name="embedding_norm")(x)
        x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
        if cfg.embedding_dim != cfg.hidden_size:  # ALBERT: a small vocabulary table, projected up once
            x = dense(cfg, cfg.hidden_size, (None, EMBED), name="projection")(x)
        return nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))

