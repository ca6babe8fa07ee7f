"""LoRA fine-tuning of a Llama-family causal LM on the shipped corpus, offline.

--config.init_from names the checkpoint folder (config.json + model.safetensors + tokenizer files): the `model/`
folder `python -m train --config configs/llama_tiny.py --workdir workdir/llama_tiny` leaves, or a public Llama,
Mistral or Qwen2 checkpoint (with --config.model set to its preset and data.max_length within its context).

Rank-8 adapters on every projection of attention and of the SwiGLU feed-forward: QLoRA (Dettmers et al. 2023) found
that adapting all linear layers, not only query and value, is what matches full fine-tuning. lora_alpha = 2r and a
learning rate of 1e-3 under a cosine decay; the base weights are frozen and get no optimizer state. The entry point
writes the adapters in peft's layout (`adapter/`) and the model with them merged (`model/`, zoo.merge_lora).
"""

from train.recipes import base_config


def get_config():
    c = base_config()
    c.model, c.task = "llama-tiny", "causal_lm"  # the architecture comes from init_from; model names it when there is none
    c.init_from = "workdir/llama_tiny/model"
    c.model_overrides.update(dict(lora_rank=8, lora_alpha=16.0, lora_dropout=0.05,
                                  lora_targets=("query", "key", "value", "out", "wi_0", "wi_1", "wo")))
    c.train.update(dict(steps=400, batch_size=16, log_every=20, eval_every=200))
    c.optimizer.update(dict(learning_rate=1e-3, b2=0.95, weight_decay=0.0))
    c.schedule.update(dict(name="cosine", warmup_steps=20, end_value=1e-4))
    c.checkpoint.update(dict(every_steps=200, keep=2))
    c.data.update(dict(tokenizer="", max_length=128, eval_batches=4))
    return c
