"""Token classification (BIO tagging, as CoNLL NER) with a BERT-family tagger on the shipped code-spans task
(train.data.code_spans_records: which words of a sentence of the Python docs are code?), offline. The tagger puts a
tag on each word's first sub-word, as transformers' run_ner does, and the eval scores entities as seqeval does
(`eval.metric="tagging"`: eval_entity_f1, eval_entity_precision, eval_entity_recall, eval_token_accuracy), keeping
the checkpoint of the best entity F1.

By default a tiny BERT trained from scratch on the shipped vocabulary: the task is learnt from the words' surface,
and 600 steps (under two minutes on 2 CPU cores) reach an eval_entity_f1 of about 0.46. From a pretrained model:
--config.init_from=/path/to/bert-base-uncased --config.data.tokenizer="" --config.optimizer.learning_rate=5e-5
(run_ner's), with --config.model set to its preset for another family. CoNLL-2003: --config.data.source=tfds
--config.data.tfds_name=conll2003 --config.data.fields='("tokens", "ner")' --config.data.eval_split=dev
--config.model_overrides.num_labels=9 --config.model_overrides.label_names='()' (the tags come from the tfds
features; name them there too for the exported id2label).
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-tiny", "token_classification"
    # the tags by id, which the exported config.json names in id2label
    c.model_overrides.update(dict(num_labels=3, label_names=("O", "B-CODE", "I-CODE")))
    c.train.update(dict(steps=600, batch_size=32, log_every=50, eval_every=200))
    c.optimizer.update(dict(name="adamw", learning_rate=1e-3, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=60))
    c.eval.metric = "tagging"  # seqeval-style entity P/R/F1 and token accuracy over the data's tag names
    c.checkpoint.update(dict(every_steps=200, keep=2, best_metric="eval_entity_f1", best_mode="max"))
    c.data.update(dict(source="code_spans", tokenizer="shipped", max_length=96, eval_batches=16))
    return c
