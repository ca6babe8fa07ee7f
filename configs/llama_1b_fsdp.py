"""Llama 3.2 1B as a packed causal LM, at the settings the Llama papers report (Touvron et al. 2023, section 2.2;
Llama 3, 2024): AdamW (0.9, 0.95), eps 1e-5, weight decay 0.1, gradient clipping 1.0, peak learning rate 3e-4 with
2000 warm-up steps and a cosine decay to 10% of it. For a pod or a multi-GPU machine: parameters, gradients and
optimizer state sharded over every device (mesh data=1, fsdp=-1; each device's batch rows are its fsdp shard's),
bfloat16 compute over float32 parameters, every layer rematerialised and the 16 layers scanned (one compiled).
Rows of 4096 tokens, 256 a batch (1M tokens a step). Data: a prepared tfds C4 (`tfds build c4/en`), or another
source via --config.data.source / .paths; tokenizer: a Llama 3 folder (tokenizer.json + tokenizer_config.json)
given with --config.data.tokenizer=/path/to/Llama-3.2-1B."""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "llama-3.2-1b", "causal_lm"
    c.model_overrides.update(dict(dtype="bfloat16", remat="full", scan_layers=True))
    c.train.update(dict(steps=250_000, batch_size=256, log_every=100, eval_every=5_000))
    c.optimizer.update(dict(name="adamw", learning_rate=3e-4, b1=0.9, b2=0.95, eps=1e-5, weight_decay=0.1,
                            clip_norm=1.0))
    c.schedule.update(dict(name="cosine", warmup_steps=2_000, end_value=3e-5))
    c.checkpoint.update(dict(every_steps=5_000, keep=3))
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    c.data.update(dict(source="tfds", tfds_name="c4/en", split="train", max_length=4096, tokenizer="",
                       eval_fraction=0.0001, eval_batches=20))
    return c
