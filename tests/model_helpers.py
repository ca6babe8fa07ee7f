"""Random weights and jitted calls for the model tests.

XLA compiles dominate a CPU test suite, and eager Flax is the worst case: every operation of an eager `init` or
`apply` is a program of its own, compiled on first use (a tiny BERT's eager init and two applies: 15 s on a cold
cache, against 3 s with the helpers below). So the tests draw weights with NumPy from the shapes `init` would give,
with no program compiled (`init` itself is run by every training test), and jit what they apply.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import zoo


def random_params(model: nn.Module, *inputs, seed: int = 0, scale: float = 0.05, **init_kwargs):
    """Variables of the shapes and dtypes `model.init(key, *inputs, **init_kwargs)` returns, unboxed: normal noise
    of std `scale`, plus 1 on LayerNorm scales (so activations keep their size through the stack)."""
    shapes = nn.unbox(jax.eval_shape(functools.partial(model.init, **init_kwargs), jax.random.key(0), *inputs))
    rng = np.random.default_rng(seed)
    # device_put, not jnp.asarray: converting on the device would compile a program per shape
    return jax.tree_util.tree_map_with_path(
        lambda path, s: jax.device_put(((path[-1].key == "scale") + scale * rng.standard_normal(s.shape))
                                       .astype(s.dtype)), shapes)


def jitted_apply(model: nn.Module, **static):
    """`model.apply` jitted, with the keyword arguments that are Python values (`decode=True`, `method=`,
    `mutable=`, `deterministic=`) fixed. Keep the result to call it again: a new one compiles anew."""
    return jax.jit(functools.partial(model.apply, **static))


def decode_in_chunks(model: nn.Module, variables, tokens, chunks, cache_length: int | None = None):
    """Feeds `tokens` through the KV cache in chunks of the given sizes (one compile per chunk size); returns the
    concatenated logits and the last cache."""
    cache = zoo.init_cache(model, tokens.shape[0], cache_length or tokens.shape[1])
    step = jitted_apply(model, decode=True, mutable=["cache"])
    logits, start = [], 0
    for size in chunks:
        out, mutated = step({**variables, "cache": cache}, tokens[:, start:start + size])
        cache, start = mutated["cache"], start + size
        logits.append(out.logits)
    return jnp.concatenate(logits, axis=1), cache
