"""A small BERT pre-trained (MLM + NSP, 15% masked 80/10/10) on the shipped corpus in about five minutes on 2 CPU
cores: `make demo`.

Tuned for that budget (README, "The demo"): two post-LN layers of 128 (wider or deeper models learned less per
second here), rows of 128 tokens so each next-sentence pair holds a few sentences, 64 rows a step, and a peak
learning rate of 3e-3 with Adam's b2 = 0.98 (RoBERTa's choice for stability at high learning rates).
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-tiny", "pretraining"
    c.model_overrides.update(dict(hidden_size=128, num_heads=4, intermediate_size=512, num_layers=2,
                                  dropout_rate=0.0, attention_dropout_rate=0.0))
    c.train.update(dict(steps=900, batch_size=64, log_every=10, eval_every=100))
    c.optimizer.update(dict(learning_rate=3e-3, b2=0.98, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=100))
    c.checkpoint.update(dict(every_steps=300, keep=2))
    c.loss.mlm_max_predictions = 20  # BERT's max_predictions_per_seq at 128 tokens
    c.data.update(dict(max_predictions=20, max_length=128, eval_batches=8))
    return c
