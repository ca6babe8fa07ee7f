"""GPT-2 (Radford et al., 2019): a causal pre-LN decoder with a final LayerNorm and an LM head tied to the input.

The public format (that of `transformers`): Conv1D weights stored [in, out] (no transposes), one fused `c_attn`.
"""

from zoo.config import Config
from zoo.families.mapping import PublicConfig, Tensor, conv1d, embedding, layer_norm, public_activation
from zoo.families.record import Family, PublicFormat
from zoo.models import Transformer


def gpt(**fields) -> Config:
    return Config(family="gpt", norm_position="pre", position_embedding="learned", causal=True, final_norm=True,
                  pooling="none", activation="gelu_tanh", layer_norm_eps=1e-5, **fields)


PRESETS = {
    "gpt2": gpt(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                max_length=1024, bos_token_id=50256, eos_token_id=50256),
    "gpt2-medium": gpt(vocab_size=50257, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                       max_length=1024, bos_token_id=50256, eos_token_id=50256),
    "gpt-tiny": gpt(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                    max_length=128, bos_token_id=1, eos_token_id=1),
}

# The public format
PREFIX = "transformer."
ARCHITECTURES = {"GPT2Model": None, "GPT2LMHeadModel": "causal_lm"}
IGNORED = (r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias",  # causal-mask buffers of old checkpoints
           r"lm_head\.weight")  # a copy of wte when the head is tied


def config_from_public(c: PublicConfig, task) -> Config:
    c.require("scale_attn_weights", True)
    c.require("scale_attn_by_inverse_layer_idx", False)
    c.require("add_cross_attention", False)
    c.get("reorder_and_upcast_attn")  # numerics only: zoo's attention logits are float32 anyway
    for name in ("summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                 "summary_first_dropout", "n_ctx"):  # GPT2DoubleHeadsModel's head; n_ctx: n_positions in old files
        c.get(name)
    hidden = c.get("n_embd", 768)
    return gpt().replace(
        vocab_size=c.get("vocab_size", 50257), hidden_size=hidden, embedding_size=None, num_layers=c.get("n_layer", 12),
        num_heads=c.get("n_head", 12), intermediate_size=c.get("n_inner") or 4 * hidden,
        max_length=c.get("n_positions", 1024), activation=c.activation("activation_function", "gelu_new"),
        dropout_rate=c.same("resid_pdrop", "embd_pdrop", default=0.1), attention_dropout_rate=c.get("attn_pdrop", 0.1),
        layer_norm_eps=c.get("layer_norm_epsilon", 1e-5), initializer_range=c.get("initializer_range", 0.02),
        tie_word_embeddings=c.get("tie_word_embeddings", True), pad_token_id=c.get("pad_token_id") or 0,
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"))


def config_to_public(cfg: Config) -> dict:
    return {"vocab_size": cfg.vocab_size, "n_embd": cfg.hidden_size, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
            "n_inner": None if cfg.intermediate_size == 4 * cfg.hidden_size else cfg.intermediate_size,
            "n_positions": cfg.max_length, "activation_function": public_activation(cfg.activation),
            "resid_pdrop": cfg.dropout_rate, "embd_pdrop": cfg.dropout_rate, "attn_pdrop": cfg.attention_dropout_rate,
            "layer_norm_epsilon": cfg.layer_norm_eps, "initializer_range": cfg.initializer_range,
            "tie_word_embeddings": cfg.tie_word_embeddings, "pad_token_id": cfg.pad_token_id,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}


def tensors(cfg: Config, task) -> dict:
    t = PREFIX
    tree = {"token_embedding": embedding(f"{t}wte.weight"),
            "embeddings": {"position_embedding": embedding(f"{t}wpe.weight")},
            "encoder": {f"layers_{i}": layer(f"{t}h.{i}.") for i in range(cfg.num_layers)},
            "final_norm": layer_norm(f"{t}ln_f")}
    if task == "causal_lm" and not cfg.tie_word_embeddings:
        tree["lm_head"] = {"decoder": {"kernel": Tensor(("lm_head.weight",), 1, transpose=True)}}
    return tree


def layer(p: str) -> dict:
    return {"attention_norm": layer_norm(f"{p}ln_1"),
            "attention": {"qkv": conv1d(f"{p}attn.c_attn"), "out": conv1d(f"{p}attn.c_proj", rows=2)},
            "mlp_norm": layer_norm(f"{p}ln_2"),
            "mlp": {"wi": conv1d(f"{p}mlp.c_fc"), "wo": conv1d(f"{p}mlp.c_proj")}}


FAMILY = Family(name="gpt", model=Transformer, config=gpt, presets=PRESETS, tasks=(None, "causal_lm"),
                public=PublicFormat(model_type="gpt2", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
