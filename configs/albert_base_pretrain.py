"""ALBERT-base pre-training as in Lan et al.: MLM + sentence-order prediction, LAMB lr 0.00176, batch 4096,
512-token sequences, 3125 warm-up steps, 125k steps. Data as in bert_base_pretrain; tokenizer: an ALBERT
`spiece.model` folder (--config.data.tokenizer)."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "albert-base-v2", "pretraining"
    c.train.update(dict(steps=125_000, batch_size=4096, log_every=100, eval_every=5_000))
    c.optimizer.update(dict(name="lamb", learning_rate=0.00176, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=3_125))
    c.checkpoint.update(dict(every_steps=5_000, keep=3))
    c.model_overrides.update(dict(dtype="bfloat16"))
    c.data.update(dict(source="tfds", tfds_name="wikipedia/20230601.en", split="train", max_length=512,
                       tokenizer="", eval_fraction=0.001, eval_batches=20, sentence_pair_objective="sop"))
    return c
