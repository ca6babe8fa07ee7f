"""A small ALBERT (factorized embedding, one shared layer, MLM + sentence-order prediction) on the shipped corpus."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "albert-tiny", "pretraining"
    c.model_overrides.update(dict(hidden_size=128, num_heads=4, intermediate_size=512, num_layers=4,
                                  embedding_size=64, classifier_dropout_rate=0.0))
    c.train.update(dict(steps=1200, batch_size=32, log_every=50, eval_every=400))
    c.optimizer.update(dict(name="lamb", learning_rate=5e-3))  # ALBERT was trained with LAMB
    c.schedule.update(dict(warmup_steps=100))
    c.checkpoint.update(dict(every_steps=400, keep=2))
    c.data.update(dict(max_length=64, eval_batches=4, sentence_pair_objective="sop"))
    return c
