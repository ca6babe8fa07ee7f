"""A tiny BERT classifier of long rows: the shipped far-key task (train.data.far_key_records: which class is the one
key word, placed in the second half of 510 filler words, far from the [CLS] that pools the row?), offline.

The attention switch stays at its default (dense); the sparse patterns' sizes are set for the sparse-attention study
(train.study): 32-token blocks, a window of 32 each side (Longformer), 2 random blocks per query block (BigBird) and
[CLS] as the one global token, as both papers make a classifier's [CLS] global. A window alone would not do: two
layers of it reach 64 tokens from [CLS], and the key lies 255 to 510 tokens away.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-tiny", "sequence_classification"
    c.model_overrides.update(dict(num_labels=2, max_length=512, dropout_rate=0.0, attention_dropout_rate=0.0,
                                  attention="dense", window=32, block_size=32, num_random_blocks=2, global_tokens=1))
    c.train.update(dict(steps=200, batch_size=16, log_every=10, eval_every=50))
    c.optimizer.update(dict(name="adamw", learning_rate=3e-3, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=30))
    c.checkpoint.update(dict(every_steps=200, keep=1))
    c.data.update(dict(source="far_key", tokenizer="shipped", max_length=512, num_examples=4800,
                       num_eval_examples=256, eval_batches=16))
    return c
