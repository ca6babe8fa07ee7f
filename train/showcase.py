"""What a trained model has learned, shown on a few inputs: `python -m train` and the notebooks print these."""

from __future__ import annotations

import jax
import numpy as np

FILL_IN = ["the function returns a [MASK] of the values.", "this module provides [MASK] for working with files.",
           "raise a [MASK] if the argument is not an integer.", "return the number of [MASK] in the list."]


def show_fill_in(model, params, tokenizer, sentences=FILL_IN):
    """The model's top guesses for each [MASK] in a few sentences."""
    batch = tokenizer.encode_batch(sentences, max_length=32, padding="longest")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = jax.jit(model.apply)({"params": jax.device_get(params)}, **inputs)
    logits = np.asarray(out.prediction_logits if model.task == "pretraining" else out.logits)
    print("\nfilling in [MASK]:")
    for row, sentence in enumerate(sentences):
        ids = list(batch["input_ids"][row])
        position = ids.index(tokenizer.mask_id)
        guesses = [tokenizer.decode([int(t)]) for t in np.argsort(-logits[row, position])[:3]]
        print(f"  {sentence:<55} -> {', '.join(guesses)}")
