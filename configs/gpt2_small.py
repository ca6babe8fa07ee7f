"""GPT-2 small (124M) as a packed causal LM on C4: AdamW (0.9, 0.95), weight decay 0.1, cosine to 10% after 2k
warm-up, 1024-token rows, batch 512. Tokenizer: a GPT-2 folder (vocab.json + merges.txt) via --config.data.tokenizer."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "gpt2", "causal_lm"
    c.train.update(dict(steps=600_000, batch_size=512, log_every=100, eval_every=5_000))
    c.optimizer.update(dict(name="adamw", learning_rate=6e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                            clip_norm=1.0))
    c.schedule.update(dict(name="cosine", warmup_steps=2_000, end_value=6e-5))
    c.checkpoint.update(dict(every_steps=5_000, keep=3))
    c.model_overrides.update(dict(dtype="bfloat16", scan_layers=True))
    c.data.update(dict(source="tfds", tfds_name="c4/en", split="train", max_length=1024, tokenizer="",
                       eval_fraction=0.0001, eval_batches=20))
    return c
