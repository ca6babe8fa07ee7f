"""Task heads over a stack's hidden states: poolers, language-model heads and the fine-tuning heads."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.config import Config
from zoo.layers import ACTIVATIONS, dense, layer_norm


class Pooler(nn.Module):
    """A sentence vector: [CLS] through a tanh dense (BERT), or the mask-aware mean, max, or both concatenated."""

    config: Config

    @nn.compact
    def __call__(self, hidden, attention_mask):  # hidden [batch, length, hidden], attention_mask [batch, length]
        cfg = self.config
        if cfg.pooling == "cls":
            return jnp.tanh(dense(cfg, cfg.hidden_size, ("embed", None), name="dense")(hidden[:, 0]))
        real = (attention_mask != 0)[..., None]
        mean = mean_pool(hidden, attention_mask)
        maximum = jnp.max(jnp.where(real, hidden, jnp.finfo(hidden.dtype).min), axis=1)
        return {"mean": mean, "max": maximum, "mean_max": jnp.concatenate([mean, maximum], axis=-1)}[cfg.pooling]


def mean_pool(hidden, attention_mask):
    """The mean over real tokens: [batch, length, hidden] and [batch, length] -> [batch, hidden]."""
    real = (attention_mask != 0)[..., None]
    return jnp.sum(jnp.where(real, hidden, 0), axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1).astype(hidden.dtype)


class LMHead(nn.Module):
    """Projects onto the vocabulary: with the input embedding matrix when tied (GPT-2, Marian, BERT's MLM)."""

    config: Config
    tokens: nn.Embed
    bias: bool

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if cfg.tie_word_embeddings:
            logits = self.tokens.attend(x)
        else:
            kernel_init = nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), ("embed", "vocab"))
            logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                              kernel_init=kernel_init, name="decoder")(x)
        if self.bias:
            logits = logits + self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,),
                cfg.param_dtype).astype(logits.dtype)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense, activation and LayerNorm (down to ALBERT's embedding size), then the tied decoder."""

    config: Config
    tokens: nn.Embed

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        h = dense(cfg, cfg.embedding_size, ("embed", None), name="dense")(hidden)
        h = layer_norm(cfg, name="norm")(ACTIVATIONS[cfg.activation](h))
        return LMHead(cfg, self.tokens, bias=True, name="decoder")(h)


def classifier(cfg: Config, num_outputs: int, name: str) -> nn.DenseGeneral:
    return dense(cfg, num_outputs, ("embed", None), name=name)
