"""A small GPT (causal LM on packed rows of the shipped corpus)."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "gpt-tiny", "causal_lm"
    c.model_overrides.update(dict(hidden_size=128, num_heads=4, intermediate_size=512, num_layers=2,
                                  dropout_rate=0.0, attention_dropout_rate=0.0))
    c.train.update(dict(steps=1200, batch_size=16, log_every=50, eval_every=400))
    c.optimizer.update(dict(learning_rate=2e-3, b2=0.95, weight_decay=0.1))
    c.schedule.update(dict(name="cosine", warmup_steps=100, end_value=1e-4))
    c.checkpoint.update(dict(every_steps=400, keep=2))
    c.data.update(dict(max_length=128, eval_batches=4))
    return c
