"""A small encoder-decoder Transformer on the generated date-translation task (Vaswani et al.'s recipe, scaled down)."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "transformer-tiny", "seq2seq"
    c.model_overrides.update(dict(dropout_rate=0.0))
    c.train.update(dict(steps=1200, batch_size=32, log_every=50, eval_every=400))
    c.optimizer.update(dict(learning_rate=2e-3, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0))
    c.schedule.update(dict(name="rsqrt", warmup_steps=200))
    c.loss.label_smoothing = 0.1
    c.checkpoint.update(dict(every_steps=400, keep=2))
    c.data.update(dict(source="dates", max_length=32, max_target_length=16, eval_batches=4))
    return c
