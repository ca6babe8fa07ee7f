"""BART-base pre-training with the paper's best single objective (Lewis et al. 2020, section 3 and table 1): text
infilling, 30% of the tokens masked in spans of Poisson(3) lengths, each span one <mask>, the decoder rebuilding the
original. BART trains as RoBERTa does (500k steps of 8,000 sequences); RoBERTa's base-size settings: batches of
8,192 rows of 512 tokens (1,024 rows with 8-step gradient accumulation), Adam (0.9, 0.98, eps 1e-6) at 6e-4 with 24k
warm-up steps then linear decay, weight decay 0.01, clipping at 1.0. zoo has no sentence permutation, which BART adds
to infilling for its released models (in the paper's table 1, infilling alone is the strongest single objective).
Data: a prepared tfds Wikipedia (`tfds build wikipedia/20230601.en` where TensorFlow is installed) and BART's
tokenizer folder (vocab.json + merges.txt) given with --config.data.tokenizer=/path/to/bart-base."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "bart-base", "text_infilling"
    # train.steps counts micro-batches: 500k updates of 8; the schedule counts updates
    c.train.update(dict(steps=4_000_000, batch_size=1024, log_every=800, eval_every=80_000))
    c.optimizer.update(dict(name="adamw", learning_rate=6e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
                            clip_norm=1.0, grad_accum_steps=8))
    c.schedule.update(dict(name="linear", warmup_steps=24_000))
    c.checkpoint.update(dict(every_steps=80_000, keep=3))
    c.model_overrides.update(dict(dtype="bfloat16", scan_layers=True))
    c.data.update(dict(source="tfds", tfds_name="wikipedia/20230601.en", split="train", max_length=512,
                       tokenizer="", eval_fraction=0.001, eval_batches=20))
    return c
