"""Qwen2 and Qwen2.5 (Yang et al. 2024): Llama (`llama.py`) with biases on the query, key and value projections only
(`attention_qkv_bias`), a larger rope_theta, and the embedding tied to the output in the small sizes.

Qwen2's optional sliding window on the upper layers (use_sliding_window, off in every released checkpoint) is not
supported: such a config.json is a ValueError naming the field. The public format is Llama's under Qwen2's names.
"""

from zoo.config import Config
from zoo.families import llama
from zoo.families.mapping import PublicConfig
from zoo.families.record import Family
from zoo.models import Transformer


def qwen2(**fields) -> Config:
    return llama.llama(**{**dict(family="qwen2", attention_qkv_bias=True, rope_theta=1000000.0, max_length=32768,
                                 vocab_size=151936, bos_token_id=151643, eos_token_id=151643), **fields})


PRESETS = {
    # Qwen/Qwen2.5-0.5B
    "qwen2.5-0.5b": qwen2(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                          tie_word_embeddings=True),
    "qwen2-tiny": qwen2(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        intermediate_size=128, max_length=128, bos_token_id=1, eos_token_id=2),
}


def config_from_public(c: PublicConfig, task) -> Config:
    c.require("use_sliding_window", False)
    layer_types = c.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        raise ValueError(f"config.json field layer_types={layer_types} is not supported by zoo (supported: "
                         f"'full_attention' in every layer)")
    c.get("sliding_window"), c.get("max_window_layers")  # used only with use_sliding_window
    return qwen2(**llama.config_fields(c))


def config_to_public(cfg: Config) -> dict:
    return {**llama.public_config(cfg), "use_sliding_window": False}


FAMILY = Family(name="qwen2", model=Transformer, config=qwen2, presets=PRESETS, tasks=llama.TASKS,
                public=llama.public_format("qwen2", config_from_public, config_to_public))
