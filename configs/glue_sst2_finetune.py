"""Fine-tune BERT-base on GLUE SST-2 (sentence classification) from pretrained weights: lr 2e-5, batch 32, 3 epochs,
10% warm-up. --config.init_from=/path/to/bert-base-uncased (config.json + model.safetensors + vocab.txt).
Offline, --config.data.source=word_order fine-tunes on the shipped word-order task instead
(train.data.word_order_records).
Another GLUE task: --config.data.tfds_name=glue/cola --config.eval.metric=glue/cola (its fields, and
--config.checkpoint.best_metric=eval_matthews_correlation; eval_f1 for glue/mrpc and glue/qqp): train.benchmarks."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-base-uncased", "sequence_classification"
    c.model_overrides.update(dict(num_labels=2))
    c.train.update(dict(steps=6_315, batch_size=32, log_every=50, eval_every=1_000))
    c.optimizer.update(dict(name="adamw", learning_rate=2e-5, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=631))
    c.eval.metric = "glue/sst2"  # GLUE's SST-2 metric: accuracy
    c.checkpoint.update(dict(every_steps=1_000, keep=2, best_metric="eval_accuracy", best_mode="max"))
    c.data.update(dict(source="tfds", tfds_name="glue/sst2", split="train", eval_split="validation",
                       fields=("sentence", "label"), max_length=128, tokenizer="",
                       eval_batches=28))  # the 872 validation sentences: 27 batches of 32 and the last of 8
    return c
