"""A small T5 pre-trained with its own objective, span corruption (Raffel et al. 2020: 15% of the tokens dropped in
spans of mean length 3, each span one sentinel in the input, the target the sentinels and their spans), on the
shipped corpus in a few minutes on 2 CPU cores.

The shipped WordPiece vocabulary gets T5's 100 sentinels appended (`data.extra_ids`), and the vocabulary is padded
to 1,152 (a multiple of 128, as T5's 32,100 tokens are padded to 32,128). Inputs of 128 tokens and targets of 32 hold
the ~150-token chunks span corruption cuts (T5's 512 / 114 at a quarter the length). AdamW at 3e-3 with warm-up and
inverse-square-root decay stands in for T5's Adafactor at 1e-2 with rsqrt decay; no dropout at this scale.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "t5-tiny", "span_corruption"
    c.model_overrides.update(dict(vocab_size=1152, dropout_rate=0.0, attention_dropout_rate=0.0))
    c.train.update(dict(steps=600, batch_size=32, log_every=10, eval_every=200))
    c.optimizer.update(dict(learning_rate=3e-3, b2=0.98, weight_decay=0.01))
    c.schedule.update(dict(name="rsqrt", warmup_steps=100))
    c.checkpoint.update(dict(every_steps=200, keep=2))
    c.data.update(dict(extra_ids=100, max_length=128, max_target_length=32, eval_batches=4))
    return c
