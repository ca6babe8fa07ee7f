"""LoRA fine-tuning of a BERT-family sentence classifier on the shipped word-order task (train.data.word_order_records:
is the sentence as written, or were two of its words swapped?), offline.
--config.init_from=/path/to/bert-base-uncased (config.json + model.safetensors + vocab.txt; any BERT-family
checkpoint, e.g. RoBERTa's, with --config.model set to its preset).

Rank-8 adapters on query and value (Hu et al. 2021's choice for RoBERTa on GLUE, with lora_alpha = 2r and their
learning rate of 5e-4, ten times full fine-tuning's: the adapters start at zero and are few). Only the adapters train,
and the classifier and pooler, which the checkpoint lacks (`optimizer.lora_also_train="head"`); the frozen encoder
gets no optimizer state. After training, `zoo.save_adapter(model, params, folder)` writes the adapters (and the
classifier) for Hugging Face peft, or `zoo.merge_lora` folds them in for `zoo.save_pretrained`.
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-base-uncased", "sequence_classification"
    c.model_overrides.update(dict(num_labels=2, lora_rank=8, lora_alpha=16.0, lora_dropout=0.1,
                                  lora_targets=("query", "value")))
    c.train.update(dict(steps=2_000, batch_size=32, log_every=50, eval_every=500))
    c.optimizer.update(dict(name="adamw", learning_rate=5e-4, weight_decay=0.01, lora_also_train="head"))
    c.schedule.update(dict(name="linear", warmup_steps=120))
    c.checkpoint.update(dict(every_steps=500, keep=2, best_metric="eval_accuracy", best_mode="max"))
    c.data.update(dict(source="word_order", max_length=64, tokenizer="", eval_batches=8))
    return c
