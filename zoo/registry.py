"""Presets by name, tasks by family, and the few calls a user needs to get a model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from zoo.config import Config
from zoo.families import FAMILIES, family
from zoo.heads import mean_pool
from zoo.models import EncoderDecoderTransformer


def list_models() -> list[str]:
    """The preset names, family by family."""
    return [name for f in FAMILIES.values() for name in f.presets]


def get_config(name: str, **overrides) -> Config:
    """The preset's config with `overrides` applied; an unknown name or field is a ValueError listing the known."""
    for f in FAMILIES.values():
        if name in f.presets:
            return f.presets[name].replace(**overrides)
    raise ValueError(f"unknown model {name!r}; the presets are: {', '.join(list_models())}")


def tasks(family_name: str) -> tuple:
    """The tasks a family supports (None is the bare model)."""
    return family(family_name).tasks


def create(name: str | Config, task: str | None = None, **overrides):
    """A Flax module for preset `name` (or a `Config`) with the head of `task`; `module.config` is its config.

    Example: `zoo.create("bert-base-uncased", task="sequence_classification", num_labels=3, dtype="bfloat16")`.
    Raises ValueError for an unknown preset, field or task, or a task the family does not support.
    """
    cfg = name.replace(**overrides) if isinstance(name, Config) else get_config(name, **overrides)
    supported = tasks(cfg.family)
    if task not in supported:
        raise ValueError(f"task {task!r} is not supported by the {cfg.family} family; it supports: "
                         f"{', '.join(str(t) for t in supported)}")
    return family(cfg.family).model(cfg, task)


def example_inputs(model, batch_size: int = 1, length: int = 1) -> tuple:
    """The positional inputs `model.init` needs: token ids (and decoder ids for an encoder-decoder)."""
    ids = jnp.zeros((batch_size, length), jnp.int32)
    runs_decoder = isinstance(model, EncoderDecoderTransformer) and model.heads[model.task].decoder
    return (ids, ids) if runs_decoder else (ids,)


def param_count(model) -> int:
    """Number of parameters, from an abstract init: nothing is allocated."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def init_cache(model, batch_size: int, length: int, source_length: int | None = None):
    """An empty KV cache for decoding up to `length` tokens (the `cache` collection for `decode=True`).

    For an encoder-decoder, the cache belongs to the decoder and also holds each layer's cross-attention keys and
    values of a source of `source_length` tokens, which the first decoding call writes. Raises ValueError when an
    encoder-decoder gets no `source_length`.
    """
    ids = jnp.zeros((batch_size, length), jnp.int32)
    if isinstance(model, EncoderDecoderTransformer):
        if source_length is None:
            raise ValueError("an encoder-decoder's cache holds the source's keys and values: pass source_length")
        encoded = jnp.zeros((batch_size, source_length, model.config.hidden_size), model.config.dtype)
        init = lambda: model.init(jax.random.key(0), ids, encoded, method="decode", decode=True)
    else:
        init = lambda: model.init(jax.random.key(0), ids, decode=True)
    shapes = jax.eval_shape(init)["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def extend_positions(model, params: dict, max_length: int):
    """(model, params) that accept sequences of up to `max_length` tokens, for long documents with sparse attention.

    A learned position table is tiled: Longformer initialised its 4,096 positions by copying RoBERTa's 512 over and
    over (Beltagy et al. 2020, section 5), which keeps each position's local neighbourhood as it was trained;
    RoBERTa's rows up to its padding index, which no real token reads, stay first and are not copied. Sinusoidal
    positions need no weights. `params` are plain arrays, as `zoo.from_pretrained` returns them.
    Raises ValueError when `max_length` is not longer than the model's.
    """
    cfg = model.config
    if max_length <= cfg.max_length:
        raise ValueError(f"max_length={max_length} is not longer than the model's {cfg.max_length} positions")
    extended = type(model)(cfg.replace(max_length=max_length), model.task)
    if cfg.position_embedding != "learned":
        return extended, params

    offset = cfg.max_length - cfg.max_tokens  # positions no real token has: RoBERTa's up to the padding index

    def tiled(tree):
        if not isinstance(tree, dict):
            return tree
        if "position_embedding" in tree:
            table = tree["position_embedding"]["embedding"]
            rows = table[offset:]
            repeats = -(-(max_length - offset) // rows.shape[0])
            table = jnp.concatenate([table[:offset], jnp.tile(rows, (repeats, 1))[:max_length - offset]])
            tree = {**tree, "position_embedding": {"embedding": table}}
        return {name: tiled(subtree) for name, subtree in tree.items()}

    return extended, tiled(params)


@functools.partial(jax.jit, static_argnames="model")
def embed(model, params, input_ids, attention_mask, token_type_ids=None) -> jax.Array:
    """Sentence embeddings as sentence-transformers computes them (all-MiniLM-L6-v2 and kin): the mean of
    `last_hidden_state` over real tokens, L2-normalised, so a dot product is the cosine similarity. [batch, hidden]

    `params` are the model's params (as `zoo.from_pretrained` returns them); `attention_mask` is 1 at real tokens.
    """
    hidden = model.apply({"params": params}, input_ids, attention_mask, token_type_ids).last_hidden_state
    pooled = mean_pool(hidden.astype(jnp.float32), attention_mask)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
