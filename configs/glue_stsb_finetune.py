"""Fine-tune BERT-base on GLUE STS-B (sentence-pair similarity, a 0-5 score) from pretrained weights, as
glue_sst2_finetune does SST-2: lr 2e-5, batch 32, 3 epochs of its 5,749 pairs, 10% warm-up. The head is a
regression (num_labels=1: one output trained on the squared error, transformers' problem_type "regression"), scored
by GLUE's Pearson and Spearman correlations. --config.init_from=/path/to/bert-base-uncased."""

from train.recipes import load_recipe


def get_config():
    c = load_recipe("glue_sst2_finetune")
    c.model_overrides.num_labels = 1
    c.train.update(dict(steps=540, eval_every=180))
    c.schedule.warmup_steps = 54
    c.eval.metric = "glue/stsb"
    c.checkpoint.update(dict(every_steps=180, best_metric="eval_pearson"))
    # its 1,500 validation pairs: 46 batches of 32 and the last of 28 (padded, scored once each)
    c.data.update(dict(tfds_name="glue/stsb", fields=("sentence1", "sentence2", "label"), eval_batches=47))
    return c
