"""T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer") and
T5 v1.1 / Flan-T5 (Chung et al. 2022): an encoder-decoder of zoo's blocks with T5's ideas as switches.

What separates it from Vaswani et al.'s Transformer (`transformer.py`): pre-RMSNorm with a final norm per stack, no
position embedding but a bucketed relative position bias on the self-attention logits (bidirectional in the encoder,
causal in the decoder, computed once per stack), no biases, no 1/sqrt(d) attention scale (folded into the weights),
no embedding scaling, dropout inside the feed-forward and after each stack's final norm. v1.0 uses ReLU and ties the output projection to the embedding, rescaling the decoder output
by d_model**-0.5; v1.1 and Flan-T5 use a gated-gelu feed-forward and an untied output projection.

The public format is transformers' `T5Model` / `T5ForConditionalGeneration` / `T5EncoderModel`. The relative bias
table lives at each stack in zoo (`encoder/relative_position_bias`), where T5 stores it in the first block.
`T5EncoderModel` is the task "encoder" of the encoder-decoder module: the encoder stack alone under the same names,
so its tensors are the seq2seq model's encoder tensors and no second model class is needed.
"""

from zoo.config import Config
from zoo.families.mapping import PublicConfig, Tensor, embedding
from zoo.families.record import Family, PublicFormat
from zoo.models import ENCODER_ONLY, EncoderDecoderTransformer


def t5(**fields) -> Config:
    return Config(**{**dict(
        family="t5", norm="rms", norm_position="pre", final_norm=True, position_embedding="relative_bias",
        use_bias=False, attention_scale=False, scale_embeddings=False, pooling="none", activation="relu",
        tie_word_embeddings=True, scale_tied_logits=True, layer_norm_eps=1e-6, dropout_rate=0.1,
        # one dropout rate everywhere: embeddings, attention, inside the feed-forward, residuals, final norms
        attention_dropout_rate=0.1, activation_dropout_rate=None, final_norm_dropout=True,
        initializer_range=0.05, vocab_size=32128, max_length=512, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0), **fields})


def t5_v1_1(**fields) -> Config:
    """T5 v1.1 and Flan-T5: gated-gelu feed-forward, untied output projection without rescaling."""
    return t5(**{**dict(activation="gated_gelu", tie_word_embeddings=False, scale_tied_logits=False), **fields})


PRESETS = {
    "t5-small": t5(hidden_size=512, num_layers=6, num_decoder_layers=6, num_heads=8, intermediate_size=2048),
    "t5-base": t5(hidden_size=768, num_layers=12, num_decoder_layers=12, num_heads=12, intermediate_size=3072),
    "flan-t5-small": t5_v1_1(hidden_size=512, num_layers=8, num_decoder_layers=8, num_heads=6,
                             attention_head_dim=64, intermediate_size=1024),
    "flan-t5-base": t5_v1_1(hidden_size=768, num_layers=12, num_decoder_layers=12, num_heads=12,
                            intermediate_size=2048),
    "t5-tiny": t5(vocab_size=1024, hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                  intermediate_size=128, max_length=128, relative_attention_num_buckets=8,
                  relative_attention_max_distance=20),
}

# The public format
ARCHITECTURES = {"T5Model": None, "T5ForConditionalGeneration": "seq2seq", "T5EncoderModel": ENCODER_ONLY}
IGNORED = (r"(encoder|decoder)\.embed_tokens\.weight",  # copies of the shared embedding
           r"lm_head\.weight",  # a copy of the shared embedding when tied
           r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight")  # old files; never used
# feed_forward_proj -> zoo activation
FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gated-gelu": "gated_gelu", "gated-silu": "gated_silu"}


def config_from_public(c: PublicConfig, task) -> Config:
    c.require("is_decoder", False)
    proj = c.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARD:
        raise ValueError(f"config.json field feed_forward_proj={proj!r} is not supported by zoo (supported: "
                         f"{', '.join(FEED_FORWARD)})")
    for name in ("dense_act_fn", "is_gated_act", "classifier_dropout", "initializer_factor"):
        c.get(name)  # derived from feed_forward_proj, or for heads and initialisation zoo does not have
    tied = c.get("tie_word_embeddings", True)
    num_layers = c.get("num_layers", 6)
    hidden, heads, head_dim = c.get("d_model", 512), c.get("num_heads", 8), c.get("d_kv", 64)
    return t5(
        vocab_size=c.get("vocab_size", 32128), hidden_size=hidden, num_layers=num_layers,
        num_decoder_layers=c.get("num_decoder_layers") or num_layers, num_heads=heads,
        attention_head_dim=None if heads * head_dim == hidden else head_dim, intermediate_size=c.get("d_ff", 2048),
        max_length=c.get("n_positions", 512),
        relative_attention_num_buckets=c.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=c.get("relative_attention_max_distance", 128),
        activation=FEED_FORWARD[proj], dropout_rate=c.get("dropout_rate", 0.1),
        attention_dropout_rate=c.get("dropout_rate", 0.1), layer_norm_eps=c.get("layer_norm_epsilon", 1e-6),
        tie_word_embeddings=tied, scale_tied_logits=c.get("scale_decoder_outputs", tied),
        pad_token_id=c.get("pad_token_id", 0), eos_token_id=c.get("eos_token_id", 1),
        bos_token_id=c.get("bos_token_id"), decoder_start_token_id=c.get("decoder_start_token_id", 0))


def config_to_public(cfg: Config) -> dict:
    proj = {v: k for k, v in FEED_FORWARD.items()}[cfg.activation]
    return {"vocab_size": cfg.vocab_size, "d_model": cfg.hidden_size, "d_kv": cfg.head_dim,
            "d_ff": cfg.intermediate_size, "num_layers": cfg.num_layers, "num_decoder_layers": cfg.num_decoder_layers,
            "num_heads": cfg.num_heads, "n_positions": cfg.max_length,
            "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
            "relative_attention_max_distance": cfg.relative_attention_max_distance, "feed_forward_proj": proj,
            "dropout_rate": cfg.dropout_rate, "layer_norm_epsilon": cfg.layer_norm_eps,
            "tie_word_embeddings": cfg.tie_word_embeddings, "scale_decoder_outputs": cfg.scale_tied_logits,
            "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id, "bos_token_id": cfg.bos_token_id,
            "decoder_start_token_id": cfg.decoder_start_token_id, "is_encoder_decoder": True}


def tensors(cfg: Config, task) -> dict:
    tree = {"token_embedding": embedding("shared.weight"), "encoder": stack(cfg, "encoder", cfg.num_layers),
            "encoder_norm": norm("encoder.final_layer_norm")}
    if task == ENCODER_ONLY:
        return tree
    tree.update(decoder=stack(cfg, "decoder", cfg.num_decoder_layers), decoder_norm=norm("decoder.final_layer_norm"))
    if task == "seq2seq" and not cfg.tie_word_embeddings:
        tree["lm_head"] = {"decoder": kernel("lm_head")}
    return tree


def stack(cfg: Config, name: str, num_layers: int) -> dict:
    decoder = name == "decoder"
    tree = {"relative_position_bias": embedding(f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")}
    for i in range(num_layers):
        p = f"{name}.block.{i}.layer."
        mlp = f"{p}{2 if decoder else 1}."
        layer = {"attention": attention(f"{p}0.SelfAttention."), "attention_norm": norm(f"{p}0.layer_norm"),
                 "mlp": feed_forward(cfg, f"{mlp}DenseReluDense."), "mlp_norm": norm(f"{mlp}layer_norm")}
        if decoder:
            layer["cross_attention"] = attention(f"{p}1.EncDecAttention.", cross_attention=True)
            layer["cross_attention_norm"] = norm(f"{p}1.layer_norm")
        tree[f"layers_{i}"] = layer
    return tree


def kernel(prefix: str, rows: int = 1) -> dict:
    """A torch Linear without bias."""
    return {"kernel": Tensor((f"{prefix}.weight",), rows, transpose=True)}


def norm(prefix: str) -> dict:
    return {"scale": Tensor((f"{prefix}.weight",))}


def attention(p: str, cross_attention: bool = False) -> dict:
    names = [f"{p}{n}.weight" for n in ("q", "k", "v")]
    projections = {"query": kernel(f"{p}q"), "key_value": {"kernel": Tensor(tuple(names[1:]), 1, transpose=True)}} \
        if cross_attention else {"qkv": {"kernel": Tensor(tuple(names), 1, transpose=True)}}
    return {**projections, "out": kernel(f"{p}o", rows=2)}


def feed_forward(cfg: Config, p: str) -> dict:
    if cfg.activation.startswith("gated_"):
        return {"wi_0": kernel(f"{p}wi_0"), "wi_1": kernel(f"{p}wi_1"), "wo": kernel(f"{p}wo")}
    return {"wi": kernel(f"{p}wi"), "wo": kernel(f"{p}wo")}


FAMILY = Family(name="t5", model=EncoderDecoderTransformer, config=t5, presets=PRESETS,
                tasks=(None, "seq2seq", ENCODER_ONLY),
                public=PublicFormat(model_type="t5", prefix="", architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
