"""Llama (Touvron et al. 2023; Llama 2, Llama 3) and its kin (TinyLlama, SmolLM2): GPT-2's causal decoder with four
ideas swapped in, each a switch of zoo's shared blocks.

What separates it from GPT-2 (`gpt2.py`): rotary positions instead of a learned table (`position_embedding="rotary"`,
with `rope_theta` and Llama 3's `rope_scaling`), grouped-query attention (`num_kv_heads`), pre-RMSNorm
(`norm="rms"`), a SwiGLU feed-forward (`activation="gated_silu"`), no biases and no dropout, and an output projection
that is not tied to the embedding (SmolLM2 and Llama 3.2 tie it).

The public format is transformers' `LlamaModel` / `LlamaForCausalLM` / `LlamaForSequenceClassification` (which scores
the last real token: zoo's `pooling="last"`). Its q/k/v Linears become zoo's fused `qkv` kernel when every head has
its own keys, and `query` + `key_value` under grouped-query attention. `mistral.py` and `qwen2.py` are this format
with their own few fields: `public_format` builds each from the family's config builder and readers.
"""

from __future__ import annotations

from typing import Callable

from zoo.config import Config
from zoo.families.mapping import PublicConfig, Tensor, embedding
from zoo.families.record import Family, PublicFormat
from zoo.models import Transformer

TASKS = (None, "causal_lm", "sequence_classification")
# hidden_act of the gated MLP (act(gate_proj x) * up_proj x) -> zoo's gated activation
GATED_ACTIVATIONS = {"silu": "gated_silu", "swish": "gated_silu", "gelu_pytorch_tanh": "gated_gelu"}


def llama(**fields) -> Config:
    return Config(**{**dict(
        family="llama", causal=True, position_embedding="rotary", rope_theta=10000.0, norm="rms", norm_position="pre",
        final_norm=True, activation="gated_silu", use_bias=False, tie_word_embeddings=False, pooling="last",
        dropout_rate=0.0, attention_dropout_rate=0.0, layer_norm_eps=1e-6, vocab_size=32000, max_length=2048,
        pad_token_id=0, bos_token_id=1, eos_token_id=2), **fields})


PRESETS = {
    # HuggingFaceTB/SmolLM2-135M
    "smollm2-135m": llama(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                          intermediate_size=1536, max_length=8192, rope_theta=100000.0, layer_norm_eps=1e-5,
                          tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T
    "tinyllama-1.1b": llama(vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                            intermediate_size=5632, max_length=2048, layer_norm_eps=1e-5),
    # meta-llama/Llama-3.2-1B
    "llama-3.2-1b": llama(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8,
                          intermediate_size=8192, max_length=131072, rope_theta=500000.0, layer_norm_eps=1e-5,
                          rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                            high_freq_factor=4.0, original_max_position_embeddings=8192),
                          tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001),
    "llama-tiny": llama(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        intermediate_size=128, max_length=128),
}

# The public format
PREFIX = "model."
IGNORED = (r"lm_head\.weight",  # a copy of embed_tokens when the head is tied
           r"model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq")  # a buffer of old checkpoints: zoo computes it


def rope_fields(c: PublicConfig) -> dict:
    """rope_theta and rope_scaling from config.json: transformers 4's `rope_theta` + `rope_scaling`, or 5's
    `rope_parameters`; a scaling type zoo cannot honour is a ValueError naming it (see `RopeScaling.from_dict`)."""
    parameters, legacy_scaling, legacy_theta = c.get("rope_parameters"), c.get("rope_scaling"), c.get("rope_theta")
    scaling = dict(parameters or legacy_scaling or {})
    theta = scaling.pop("rope_theta", None) or legacy_theta or 10000.0
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = {}
    partial = scaling.pop("partial_rotary_factor", None) or c.get("partial_rotary_factor") or 1.0
    if partial != 1.0:  # rotating only part of each head (Phi, GPT-NeoX): not a switch of zoo's
        raise ValueError(f"config.json field partial_rotary_factor={partial} is not supported by zoo (supported: 1.0)")
    return dict(rope_theta=float(theta), rope_scaling=scaling or None)


def config_fields(c: PublicConfig) -> dict:
    """The Config fields every Llama-format config.json gives (mistral and qwen2 read theirs on top)."""
    c.get("pretraining_tp")  # a way to split Llama 1's matmuls across devices: the same computation
    c.get("mlp_bias")
    act = c.get("hidden_act", "silu")
    if act not in GATED_ACTIVATIONS:
        raise ValueError(f"config.json field hidden_act={act!r} is not supported by zoo (supported: "
                         f"{', '.join(GATED_ACTIVATIONS)})")
    if c.get("attention_bias", False) != c.get("mlp_bias", False):
        raise ValueError(f"config.json fields attention_bias={c.get('attention_bias')} and "
                         f"mlp_bias={c.get('mlp_bias')} differ; zoo's use_bias needs them equal")
    hidden, heads = c.get("hidden_size", 4096), c.get("num_attention_heads", 32)
    kv_heads, head_dim = c.get("num_key_value_heads") or heads, c.get("head_dim") or hidden // heads
    return dict(
        vocab_size=c.get("vocab_size", 32000), hidden_size=hidden, num_layers=c.get("num_hidden_layers", 32),
        num_heads=heads, num_kv_heads=None if kv_heads == heads else kv_heads,
        attention_head_dim=None if head_dim * heads == hidden else head_dim,
        intermediate_size=c.get("intermediate_size", 11008), max_length=c.get("max_position_embeddings", 2048),
        activation=GATED_ACTIVATIONS[act], use_bias=bool(c.get("attention_bias", False)),
        attention_dropout_rate=float(c.get("attention_dropout") or 0.0), layer_norm_eps=c.get("rms_norm_eps", 1e-6),
        initializer_range=c.get("initializer_range", 0.02), tie_word_embeddings=c.get("tie_word_embeddings", False),
        pad_token_id=c.get("pad_token_id") or 0, bos_token_id=c.get("bos_token_id"),
        eos_token_id=c.get("eos_token_id"), **rope_fields(c))


def public_config(cfg: Config) -> dict:
    """Config -> the config.json fields of the Llama format (rope in transformers 4's spelling, which 5 reads)."""
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id
    return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
            "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_length,
            "hidden_act": {"gated_silu": "silu", "gated_gelu": "gelu_pytorch_tanh"}[cfg.activation],
            "attention_bias": cfg.use_bias, "mlp_bias": cfg.use_bias, "attention_dropout": cfg.attention_dropout_rate,
            "rms_norm_eps": cfg.layer_norm_eps, "initializer_range": cfg.initializer_range,
            "tie_word_embeddings": cfg.tie_word_embeddings, "pad_token_id": cfg.pad_token_id,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": eos, "rope_theta": cfg.rope_theta,
            "rope_scaling": None if cfg.rope_scaling is None else cfg.rope_scaling.to_dict()}


def config_from_public(c: PublicConfig, task) -> Config:
    return llama(**config_fields(c))


def tensors(cfg: Config, task) -> dict:
    tree = {"token_embedding": embedding(f"{PREFIX}embed_tokens.weight"),
            "encoder": {f"layers_{i}": layer(cfg, f"{PREFIX}layers.{i}.") for i in range(cfg.num_layers)},
            "final_norm": norm(f"{PREFIX}norm")}
    if task == "causal_lm" and not cfg.tie_word_embeddings:
        tree["lm_head"] = {"decoder": linear(cfg, "lm_head", bias=False)}
    if task == "sequence_classification":
        tree["classifier"] = linear(cfg, "score", bias=False)
    return tree


def linear(cfg: Config, prefix: str, rows: int = 1, bias: bool | None = None) -> dict:
    """A torch Linear, with its bias where the config has one (`bias`: None means cfg.use_bias)."""
    tree = {"kernel": Tensor((f"{prefix}.weight",), rows, transpose=True)}
    if cfg.use_bias if bias is None else bias:
        tree["bias"] = Tensor((f"{prefix}.bias",))
    return tree


def fused(cfg: Config, prefixes: list[str]) -> dict:
    """Linears of one input fused into one zoo kernel (q/k/v into `qkv`, k/v into `key_value`)."""
    tree = {"kernel": Tensor(tuple(f"{p}.weight" for p in prefixes), 1, transpose=True)}
    if cfg.use_bias or cfg.attention_qkv_bias:
        tree["bias"] = Tensor(tuple(f"{p}.bias" for p in prefixes))
    return tree


def norm(prefix: str) -> dict:
    return {"scale": Tensor((f"{prefix}.weight",))}


def layer(cfg: Config, p: str) -> dict:
    a = f"{p}self_attn."
    if cfg.kv_heads == cfg.num_heads:
        projections = {"qkv": fused(cfg, [f"{a}q_proj", f"{a}k_proj", f"{a}v_proj"])}
    else:
        projections = {"query": fused(cfg, [f"{a}q_proj"]), "key_value": fused(cfg, [f"{a}k_proj", f"{a}v_proj"])}
    return {"attention_norm": norm(f"{p}input_layernorm"),
            "attention": {**projections, "out": linear(cfg, f"{a}o_proj", rows=2)},
            "mlp_norm": norm(f"{p}post_attention_layernorm"),
            "mlp": {"wi_0": linear(cfg, f"{p}mlp.gate_proj"), "wi_1": linear(cfg, f"{p}mlp.up_proj"),
                    "wo": linear(cfg, f"{p}mlp.down_proj")}}


def public_format(model_type: str, config_from_public: Callable, config_to_public: Callable) -> PublicFormat:
    """The Llama checkpoint layout under `model_type`'s architecture names (LlamaModel, LlamaForCausalLM, ...)."""
    name = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[model_type]
    architectures = {f"{name}Model": None, f"{name}ForCausalLM": "causal_lm",
                     f"{name}ForSequenceClassification": "sequence_classification"}
    return PublicFormat(model_type=model_type, prefix=PREFIX, architectures=architectures,
                        config_from_public=config_from_public, config_to_public=config_to_public, tensors=tensors,
                        ignored=IGNORED)


FAMILY = Family(name="llama", model=Transformer, config=llama, presets=PRESETS, tasks=TASKS,
                public=public_format("llama", config_from_public, public_config))
