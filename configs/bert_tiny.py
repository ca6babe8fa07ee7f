"""A small BERT pre-trained (MLM + NSP) on the shipped corpus in a few minutes on 2 CPU cores: `make demo`."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-tiny", "pretraining"
    c.model_overrides.update(dict(hidden_size=128, num_heads=4, intermediate_size=512, num_layers=2,
                                  dropout_rate=0.0, attention_dropout_rate=0.0))
    c.train.update(dict(steps=600, batch_size=32, log_every=50, eval_every=200))
    c.optimizer.update(dict(learning_rate=2e-3, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=100))
    c.checkpoint.update(dict(every_steps=200, keep=2))
    c.loss.mlm_max_predictions = 10  # BERT's max_predictions_per_seq
    c.data.update(dict(max_predictions=10, max_length=64, eval_batches=4))
    return c
