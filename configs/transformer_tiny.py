"""A small encoder-decoder Transformer on the generated date-translation task (Vaswani et al.'s recipe, scaled down).

Each eval decodes its 4 x 32 held-out dates greedily (16 new tokens at most) and reports sacreBLEU, chrF and exact
match of the text (eval.metric "translation"); the checkpoint kept besides the last is the one with the most dates
exactly right, the number that matters for a task with one correct answer per source.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "transformer-tiny", "seq2seq"
    c.model_overrides.update(dict(dropout_rate=0.0))
    c.train.update(dict(steps=1200, batch_size=32, log_every=50, eval_every=400))
    c.optimizer.update(dict(learning_rate=2e-3, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0))
    c.schedule.update(dict(name="rsqrt", warmup_steps=200))
    c.loss.label_smoothing = 0.1
    c.eval.metric = "translation"  # eval_bleu, eval_chrf, eval_exact_match of the greedy translations
    c.checkpoint.update(dict(every_steps=400, keep=2, best_metric="eval_exact_match", best_mode="max"))
    c.data.update(dict(source="dates", max_length=32, max_target_length=16, eval_batches=4))
    return c
