"""Mistral 7B (Jiang et al. 2023): Llama (`llama.py`) with a sliding window of attention.

Each token attends to itself and the sliding_window - 1 tokens before it, zoo's `attention="sliding_window"` with
`window = sliding_window - 1` (zoo counts the keys besides the query's own), and decoding keeps a rolling KV cache of
the window (`zoo.attention.cache_length`). config.json's sliding_window null (Mistral v0.2 and later) is dense
attention. The public format is Llama's under Mistral's names (MistralForCausalLM, ...).
"""

from zoo.config import Config
from zoo.families import llama
from zoo.families.mapping import PublicConfig
from zoo.families.record import Family
from zoo.models import Transformer


def mistral(**fields) -> Config:
    return llama.llama(**{**dict(family="mistral", attention="sliding_window", window=4095, max_length=32768,
                                 layer_norm_eps=1e-5), **fields})


PRESETS = {
    # mistralai/Mistral-7B-v0.1
    "mistral-7b-v0.1": mistral(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                               intermediate_size=14336),
    "mistral-tiny": mistral(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=128, max_length=128, window=15),
}


def config_from_public(c: PublicConfig, task) -> Config:
    window = c.get("sliding_window")
    attention = dict(attention="sliding_window", window=window - 1) if window else dict(attention="dense")
    return mistral(**llama.config_fields(c), **attention)


def config_to_public(cfg: Config) -> dict:
    if cfg.global_tokens:
        raise ValueError(f"the mistral format has no global tokens: global_tokens={cfg.global_tokens}")
    window = cfg.window + 1 if cfg.attention == "sliding_window" else None
    return {**llama.public_config(cfg), "sliding_window": window}


FAMILY = Family(name="mistral", model=Transformer, config=mistral, presets=PRESETS, tasks=llama.TASKS,
                public=llama.public_format("mistral", config_from_public, config_to_public))
