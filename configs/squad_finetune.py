"""Fine-tune BERT-base for SQuAD v1.1 span QA from pretrained weights: lr 3e-5, batch 32, 2 epochs, 384 tokens
(longer contexts in windows sharing data.doc_stride=128), 10% warm-up. --config.init_from=/path/to/bert-base-uncased
(config.json + model.safetensors + vocab.txt); data: a prepared tfds squad/v1.1."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bert-base-uncased", "question_answering"
    c.train.update(dict(steps=5_475, batch_size=32, log_every=50, eval_every=1_000))
    c.optimizer.update(dict(name="adamw", learning_rate=3e-5, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=547))
    c.eval.metric = "squad"  # exact_match and f1 of train.squad, as eval_exact_match / eval_f1
    c.checkpoint.update(dict(every_steps=1_000, keep=2, best_metric="eval_f1", best_mode="max"))
    c.data.update(dict(source="tfds", tfds_name="squad/v1.1", split="train", eval_split="validation",
                       max_length=384, tokenizer="", eval_batches=20,
                       doc_stride=128))  # tokens consecutive windows of a long context share
    return c
