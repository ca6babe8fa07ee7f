"""What a trained model has learned, shown on a few inputs: `python -m train` and the notebooks print these."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from zoo.registry import example_inputs

# Sentences of the shipped corpus's documents that configs/bert_tiny.py holds out (`data.eval_split_seed`), which
# pre-training never sees and which the training documents do not repeat, each with a content word masked, and that
# word. tests/test_showcase.py checks that they are held out.
FILL_IN = (("A new [MASK] of the globals dictionary is created for each DocTest.", "copy"),
           ("Construct a date from a [MASK] in ISO 8601 format.", "string"),
           ("Return a [MASK] of the nested symbol tables.", "list"),
           ("Turn the prefix [MASK] into a bitwise netmask", "length"),
           ("Check [MASK] the queue is empty.", "whether"))
FILL_IN_SENTENCES = tuple(sentence for sentence, _ in FILL_IN)
FILL_IN_WORDS = tuple(word for _, word in FILL_IN)


def fill_in_guesses(model, params, tokenizer, sentences=FILL_IN_SENTENCES, top: int = 3) -> list[list[tuple[str, float]]]:
    """For each sentence, the model's `top` guesses for its [MASK] with their probabilities, most likely first.

    The guesses are tokens that can stand as a word (`tokenizer.word_start_table`, less the special tokens): each
    [MASK] stands for a whole word, which a continuation piece such as "##ed" cannot fill. Their probabilities are the
    softmax over the whole vocabulary, as the model gives them.
    Raises ValueError naming a sentence without exactly one [MASK].
    """
    batch = tokenizer.encode_batch(list(sentences), max_length=model.config.max_length, padding="longest")
    positions = []
    for sentence, ids in zip(sentences, batch["input_ids"]):
        masked = np.flatnonzero(ids == tokenizer.mask_id)
        if len(masked) != 1:
            raise ValueError(f"{sentence!r} has {len(masked)} [MASK] tokens; fill-in shows sentences with one")
        positions.append(int(masked[0]))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = jax.jit(model.apply)({"params": jax.device_get(params)}, **inputs)
    # The masked-LM heads (pretraining, mlm) put the MLM logits first among their outputs.
    logits = np.asarray(getattr(out, model.heads[model.task].outputs[0]), np.float64)
    candidates = tokenizer.word_start_table()[:logits.shape[-1]]
    candidates[list(tokenizer.special_ids)] = False
    candidate_ids = np.flatnonzero(candidates)
    guesses = []
    for row, position in enumerate(positions):
        at_mask = logits[row, position]
        probabilities = np.exp(at_mask - at_mask.max())
        probabilities /= probabilities.sum()
        best = candidate_ids[np.argsort(-probabilities[candidate_ids])[:top]]
        guesses.append([(tokenizer.decode([int(t)]), float(probabilities[t])) for t in best])
    return guesses


def show_fill_in(model, params, tokenizer, sentences=FILL_IN_SENTENCES, words=FILL_IN_WORDS,
                 title: str = "filling in [MASK] (held-out sentences)"):
    """Prints the model's top three guesses for each [MASK], with their probabilities (and the masked word, when
    `words` gives it)."""
    if words and len(words) != len(sentences):
        raise ValueError(f"{len(words)} masked words for {len(sentences)} sentences; pass words=None to show none")
    print(f"\n{title}:")
    for row, (sentence, guesses) in enumerate(zip(sentences, fill_in_guesses(model, params, tokenizer, sentences))):
        shown = ", ".join(f"{word} {probability:.1%}" for word, probability in guesses)
        masked = f"  [{words[row]}]" if words else ""
        print(f"  {sentence:<80} -> {shown}{masked}")


def untrained_params(model, seed: int):
    """The random weights training starts from with `config.seed` (init draws them from the key, whatever the
    inputs' values and length): the untrained model to compare the trained one with."""
    return jax.jit(lambda key: nn.unbox(model.init(key, *example_inputs(model))["params"]))(jax.random.key(seed))


def fill_in_before_and_after(model, params, tokenizer, config):
    """The masked-LM tasks' showcase: the trained model's guesses, then the untrained model's for the same
    sentences, so the difference is visible."""
    show_fill_in(model, params, tokenizer)
    show_fill_in(model, untrained_params(model, config.seed), tokenizer,
                 title="the same sentences before training (the random weights it started from)")
