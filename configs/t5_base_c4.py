"""T5-base pre-training as in Raffel et al. 2020 (section 3.1): span corruption (15% of the tokens in spans of mean
length 3) on C4, inputs of 512 tokens and targets of 114, 128 sequences a batch (2^16 tokens), 2^19 steps of
Adafactor with the inverse-square-root schedule 1 / sqrt(max(step, 10^4)) (0.01 for the first 10^4 steps), dropout
0.1, no weight decay, no clipping. Data: a prepared tfds C4 (`tfds build c4/en` where TensorFlow and Apache Beam are
installed; 800 GB) and T5's SentencePiece folder (spiece.model, with its 100 sentinels) given with
--config.data.tokenizer=/path/to/t5-base."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "t5-base", "span_corruption"
    c.train.update(dict(steps=524_288, batch_size=128, log_every=100, eval_every=10_000))
    c.optimizer.update(dict(name="adafactor", learning_rate=0.01, weight_decay=0.0, clip_norm=0.0))
    c.schedule.update(dict(name="constant_rsqrt", warmup_steps=10_000))
    c.checkpoint.update(dict(every_steps=10_000, keep=3))
    c.model_overrides.update(dict(dtype="bfloat16", scan_layers=True))
    c.data.update(dict(source="tfds", tfds_name="c4/en", split="train", max_length=512, max_target_length=114,
                       tokenizer="", eval_fraction=0.0001, eval_batches=20))
    return c
