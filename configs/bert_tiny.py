"""A small BERT pre-trained (MLM + NSP, 15% masked 80/10/10) on the shipped corpus in about five minutes on 2 CPU
cores: `make demo`.

Tuned for that budget (README, "The demo", which lists the arms tried):
- The shipped WordPiece vocabulary of 4096 tokens (`data.tokenizer="shipped-4096"`, `vocab_size=4096`), not the tiny
  presets' 1024: it keeps most words whole (1.45 tokens a word on the corpus, against 1.96), so a row of 128 tokens
  holds a third more text and a word in both segments of a pair is one token in both. Next-sentence accuracy, held out
  after 2,000 steps, rose from a mean of 0.729 over five seeds to 0.783 (the recipe as it is; on one device seeds 0-2
  reached 0.814, 0.798 and 0.787, and 0.779 with 2,048 tokens), and the [MASK] showcase guesses whole words
  ("datetime", "table", "tuple"). Masked-LM accuracy fell from 0.50 to 0.40: a whole word is a harder guess than a
  piece of one. The larger embedding (827,530 parameters, 431,242 before) makes a step about 1.1x as long.
- Two post-LN layers of 128 with 4 heads and a feed-forward of 256 (twice the width, where BERT's is four times),
  rows of 128 tokens so each next-sentence pair holds a few sentences, 64 rows a step, Adam's b2 = 0.98 (RoBERTa's
  choice for stability at high learning rates) and a peak learning rate of 5e-3 (with relative positions it reached
  0.48 MLM accuracy where 3e-3 reached 0.45; with absolute positions neither got past 0.20). Wider or deeper models
  learned less per second here. The narrower feed-forward makes a step 0.76x as long, so the budget holds 2,000 steps
  instead of 1,650, and next-sentence accuracy, which learns late and was still rising at the end, gains more from the
  steps than it loses with the width (README, "The demo").
- Two CPU devices (`train.cpu_devices=2`), the batch split between them (the mesh's data axis): a step 1.1x faster on
  2 cores than on one device (the 2,000 steps in 4 min 34 s against 4 min 58 s). The profiler's trace of the step
  (the 1,024-token model's) shows XLA's two threads running operations at once for 25 ms of 128 on one device, for
  102 of 108 on two. The step is the same program over the whole batch (XLA splits it and sums the gradients), so
  only rounding differs.
- Relative positions (`position_embedding="relative_bias"`: T5's bucketed per-head bias on the attention logits, as
  Shaw et al. 2018 and DeBERTa use relative positions in BERT-style encoders) instead of a learned absolute table.
  With absolute positions the model sat on a plateau at about 20% MLM accuracy, guessing the corpus's commonest
  tokens: a head must learn "look at my neighbour" through the product of the position table and two projections.
  With the bias one scalar per head and distance says it, once that scalar is large (the next two points): at T5's
  init and the common learning rate it was not (0.19 in 300 steps, against 0.18).
- The bias table starts at ALiBi's slopes times 4 (`relative_attention_alibi_init`; Press et al. 2022, MosaicBERT's
  encoder): heads from local (1 per token of distance) to broad (1/64), instead of uniform attention.
- The bias table trains at 10x the learning rate (`optimizer.lr_multipliers`): Adam moves a parameter by about the
  learning rate per step, so at 3e-3 the table reached only ~0.3 after 300 steps, while "attend to the token on my
  left" needs a logit of 3 to 6 over 127 others. Faster, it gets there in about a hundred steps and the heads split
  into left-neighbour, right-neighbour and two-to-the-left heads. In 300-step runs the ALiBi start alone reached 0.26
  MLM accuracy, the faster table alone (30x) 0.29, both 0.31.
- 2,000 steps: with XLA's freed buffers kept (`train.retain_freed_memory`, train/malloc.py), the shared bias's
  gradient summed as a matrix-vector product (`zoo.attention.broadcast_over_batch`) and FlashAttention's backward
  (`zoo.attention.softmax_attention`) a step of the 4x feed-forward took about 0.17 s here, not 0.28 (750 steps fit
  the budget before all three); with the 2x feed-forward about 0.13 s. The bias costs 0 to 6% more per step than a
  position table.
- The first token ([CLS]) untied from the relative bias (`relative_attention_untie_first`, TUPE: Ke et al. 2021):
  attention from and to it takes a learned per-head scalar, so the pooled state reads both segments of the pair
  however local the ALiBi start makes the heads. Next-sentence accuracy held out: 0.62 at step 500 and 0.65 at 750,
  against 0.52 and 0.60 without it (the split and shuffle below in both); MLM accuracy the same (0.42 and 0.41).
- 24 held-out documents drawn at random (`data.eval_split_seed=0`), not the corpus's last 5%: those are all Python
  language-reference topics, and their next-sentence negatives come from the same few look-alike documents. With the
  untied [CLS] the training rows reached 0.67 next-sentence accuracy while those topics stayed at 0.53.
- The examples shuffled in windows of 512 (`data.shuffle_window`, grain's window shuffle; a document makes about 15
  pairs, so a window spans some 32 documents), as BERT shuffles its instances, instead of a batch holding one or two
  documents' rows.
Measured 2026-12-07 on an idle 2-core AMD EPYC (README, "The demo"): held-out MLM accuracy 0.40 and next-sentence
accuracy 0.776 (263 held-out rows, about +-0.026) after 2,000 steps in 4 min 34 s, 4 min 45 s in all; the issue asks
for 0.35 and 0.75. Seeds 1 to 4 (the same recipe, two devices on one core each, scored on the same held-out rows)
reach 0.779, 0.798, 0.760 and 0.802: a mean of 0.783 over the five seeds (0.760-0.802), MLM 0.40-0.43. Next-sentence
accuracy moves by a few points between seeds, between evaluations 200 steps apart and between runs whose arithmetic
differs in rounding only (seed 0 on one device: 0.825), so the arms in the README are read against that.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-tiny", "pretraining"
    c.model_overrides.update(dict(vocab_size=4096, hidden_size=128, num_heads=4, intermediate_size=256, num_layers=2,
                                  dropout_rate=0.0, attention_dropout_rate=0.0,
                                  position_embedding="relative_bias", relative_attention_alibi_init=4.0,
                                  relative_attention_untie_first=True))
    c.train.update(dict(steps=2000, batch_size=64, log_every=10, eval_every=200, retain_freed_memory=True,
                        cpu_devices=2))
    c.optimizer.update(dict(learning_rate=5e-3, b2=0.98, weight_decay=0.01,
                            lr_multipliers="relative_position_bias=10"))
    c.schedule.update(dict(name="linear", warmup_steps=100))
    c.checkpoint.update(dict(every_steps=400, keep=2))
    c.loss.mlm_max_predictions = 20  # BERT's max_predictions_per_seq at 128 tokens
    c.data.update(dict(tokenizer="shipped-4096", max_predictions=20, max_length=128, eval_batches=8, eval_split_seed=0,
                       shuffle_window=512))
    return c
