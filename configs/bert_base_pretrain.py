"""BERT-base pre-training as in Devlin et al.: MLM (15%, 80/10/10) + NSP, 128-token sequences, batch 256,
AdamW lr 1e-4 (0.9, 0.999, eps 1e-6), weight decay 0.01 off LayerNorm and biases, 10k warm-up then linear decay,
clipping at 1.0. Data: a prepared tfds Wikipedia (`tfds build wikipedia/20230601.en` where TensorFlow is installed)
and a BERT `vocab.txt` folder given with --config.data.tokenizer=/path/to/bert-base-uncased."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-base-uncased", "pretraining"
    c.train.update(dict(steps=1_000_000, batch_size=256, log_every=100, eval_every=10_000))
    c.optimizer.update(dict(name="adamw", learning_rate=1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                            clip_norm=1.0))
    c.schedule.update(dict(name="linear", warmup_steps=10_000))
    c.checkpoint.update(dict(every_steps=10_000, keep=3))
    c.model_overrides.update(dict(dtype="bfloat16", scan_layers=True))
    c.loss.mlm_max_predictions = 20  # BERT's max_predictions_per_seq
    c.data.update(dict(source="tfds", tfds_name="wikipedia/20230601.en", split="train", max_length=128,
                       max_predictions=20, tokenizer="", eval_fraction=0.001, eval_batches=20))
    return c
