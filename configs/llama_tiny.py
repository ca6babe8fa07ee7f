"""A small Llama (causal LM on packed rows of the shipped corpus): rotary positions, grouped-query attention (4 query
heads sharing 2 key/value heads), RMSNorm and SwiGLU, trained exactly as gpt_tiny is, so the two curves compare."""

import ml_collections

from train.recipes import load_recipe


def get_config():
    c = load_recipe("gpt_tiny")
    c.model = "llama-tiny"
    c.model_overrides = ml_collections.ConfigDict(dict(hidden_size=128, num_heads=4, num_kv_heads=2,
                                                       intermediate_size=384, num_layers=2))
    return c
