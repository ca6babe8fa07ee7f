"""Transformer-base on WMT'14 en-de as in Vaswani et al.: Adam (0.9, 0.98, eps 1e-9), lr = d^-0.5 * min(step^-0.5,
step * 4000^-1.5), label smoothing 0.1, dropout 0.1, 100k steps. Tokenizer: a shared sentencepiece or Marian folder
(--config.data.tokenizer; a Marian pair decodes the German with its target tokenizer).

Every 5,000 steps the eval decodes its 20 batches of validation sources greedily (256 new tokens at most, stopping
when every row has ended) and reports sacreBLEU and chrF of the text, the scores the paper's table compares (it
reports beam search, 4 beams: greedy reads a little lower), keeping the checkpoint with the best BLEU.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "transformer-base", "seq2seq"
    c.train.update(dict(steps=100_000, batch_size=256, log_every=100, eval_every=5_000))
    warmup, d_model = 4000, 512
    c.optimizer.update(dict(name="adamw", learning_rate=d_model ** -0.5 * warmup ** -0.5, b1=0.9, b2=0.98, eps=1e-9,
                            weight_decay=0.0, clip_norm=0.0))
    c.schedule.update(dict(name="rsqrt", warmup_steps=warmup))
    c.loss.label_smoothing = 0.1
    c.eval.metric = "translation"  # eval_bleu, eval_chrf, eval_exact_match of the greedy translations
    c.checkpoint.update(dict(every_steps=5_000, keep=3, best_metric="eval_bleu", best_mode="max"))
    c.data.update(dict(source="tfds", tfds_name="wmt14_translate/de-en", split="train", eval_split="validation",
                       source_field="en", target_field="de", max_length=256, max_target_length=256, tokenizer="",
                       eval_batches=20))
    return c
