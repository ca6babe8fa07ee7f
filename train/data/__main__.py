"""`python -m train.data`: one batch of every recipe from the shipped corpus, to see what the models are fed."""

from __future__ import annotations

import time

import numpy as np

from train.data import (albert_pretraining_batches, bert_pretraining_batches, causal_lm_batches,
                        date_translation_pairs, seq2seq_batches, shipped_documents, shipped_tokenizer)


def main() -> None:
    start = time.perf_counter()
    documents, tokenizer = shipped_documents(), shipped_tokenizer()
    print(f"shipped corpus: {len(documents)} documents, {sum(map(len, documents))} sentences; "
          f"WordPiece vocabulary of {tokenizer.vocab_size} ({time.perf_counter() - start:.1f}s)\n")
    recipes = {
        "BERT (MLM + NSP)": bert_pretraining_batches(documents, tokenizer, batch_size=8, max_length=64),
        "ALBERT (MLM + SOP)": albert_pretraining_batches(documents, tokenizer, batch_size=8, max_length=64),
        "GPT (packed causal LM)": causal_lm_batches(documents, tokenizer, batch_size=8, max_length=64),
        "encoder-decoder (dates -> ISO)": seq2seq_batches(date_translation_pairs(1000), tokenizer, batch_size=8,
                                                          max_source_length=24, max_target_length=16),
    }
    for name, batches in recipes.items():
        batch = next(batches)
        shapes = ", ".join(f"{k} {v.shape}" for k, v in batch.items())
        print(f"{name}: {shapes}")
        row = batch["input_ids"][0]
        print(f"  input:  {tokenizer.decode(row, skip_special_tokens=False)[:150]!r}")
        for key in ("mlm_labels", "labels"):
            if key in batch:
                targets = batch[key][0][batch[key][0] >= 0]
                print(f"  {key}: {tokenizer.decode(targets, skip_special_tokens=False)[:150]!r}")
        if "next_sentence_labels" in batch:
            print(f"  next_sentence_labels: {batch['next_sentence_labels'].tolist()}")
        print(f"  state after one batch: {batches.get_state()}\n")
    batch = next(recipes["BERT (MLM + NSP)"])
    not_text = list(tokenizer.special_ids - {tokenizer.mask_id})
    text = (batch["attention_mask"] > 0) & ~np.isin(batch["input_ids"], not_text)
    print(f"done in {time.perf_counter() - start:.1f}s; a BERT batch predicts "
          f"{(batch['mlm_labels'] >= 0).sum() / text.sum():.3f} of its text tokens")

if __name__ == "__main__":
    main()
