"""`python -m zoo`: every preset built, counted, and run forward on a real sentence."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

import zoo
from zoo.registry import example_inputs

SENTENCE = "The quick brown fox jumps over the lazy dog."


def main() -> None:
    # No tokenizer is needed to exercise the models: the sentence's UTF-8 bytes are valid ids in every vocabulary.
    ids = jnp.asarray([list(SENTENCE.encode("utf-8"))], jnp.int32)
    print(f"{'model':<20} {'family':<12} {'parameters':>14}  {'forward':>8}  output")
    for name in zoo.list_models():
        model = zoo.create(name)
        start = time.perf_counter()
        args = (ids,) * len(example_inputs(model))
        variables = jax.jit(model.init)(jax.random.key(0), *args)
        out = jax.jit(model.apply)(variables, *args)
        hidden = out.last_hidden_state.block_until_ready()
        seconds = time.perf_counter() - start
        print(f"{name:<20} {model.config.family:<12} {zoo.param_count(model):>14,}  {seconds:>7.1f}s  "
              f"last_hidden_state {tuple(hidden.shape)}, mean |h| {float(jnp.abs(hidden).mean()):.3f}", flush=True)
        del variables, out
    print(f"\nEach model ran on: {SENTENCE!r} ({ids.shape[1]} byte ids), with random weights on {jax.devices()[0]}.",
          file=sys.stdout)


if __name__ == "__main__":
    main()
