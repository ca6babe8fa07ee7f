"""The Transformer of Vaswani et al. (2017): post-LN encoder and decoder with cross-attention, sinusoidal positions,
and one embedding shared by source, target and output projection, scaled by sqrt(d_model).

The public format is Marian's (the OPUS-MT models) in the layout of `transformers`: separate q/k/v Linears, one
embedding shared by both stacks and the output, static sinusoidal positions (not stored), and a `final_logits_bias`
added to the logits.
"""

from zoo.config import Config
from zoo.embeddings import sinusoidal_positions
from zoo.families.mapping import PublicConfig, Tensor, embedding, fused_linear, layer_norm, linear, public_activation
from zoo.families.record import Family, PublicFormat
from zoo.models import EncoderDecoderTransformer


def transformer(**fields) -> Config:
    return Config(family="transformer", norm_position="post", position_embedding="sinusoidal",
                  scale_embeddings=True, pooling="none", activation="relu", layer_norm_eps=1e-6,
                  attention_dropout_rate=0.0, **fields)


PRESETS = {
    # 37k shared BPE vocabulary of the WMT'14 en-de experiments
    "transformer-base": transformer(vocab_size=37000, hidden_size=512, num_layers=6, num_decoder_layers=6,
                                    num_heads=8, intermediate_size=2048, max_length=1024, dropout_rate=0.1,
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    "transformer-big": transformer(vocab_size=37000, hidden_size=1024, num_layers=6, num_decoder_layers=6,
                                   num_heads=16, intermediate_size=4096, max_length=1024, dropout_rate=0.3,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    "transformer-tiny": transformer(vocab_size=1024, hidden_size=64, num_layers=2, num_decoder_layers=2,
                                    num_heads=4, intermediate_size=128, max_length=128, pad_token_id=0,
                                    eos_token_id=1, decoder_start_token_id=0),
}

# The public format
PREFIX = "model."
ARCHITECTURES = {"MarianModel": None, "MarianMTModel": "seq2seq"}
IGNORED = (r"(model\.)?(encoder|decoder)\.embed_positions\.weight",  # the sinusoid, which zoo computes
           r"(model\.)?(encoder|decoder)\.embed_tokens\.weight",  # copies of the shared embedding
           r"lm_head\.weight")  # a copy of the shared embedding when tied
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default; Marian has no field for it


def config_from_public(c: PublicConfig, task) -> Config:
    for name in ("normalize_before", "normalize_embedding", "add_final_layer_norm", "add_bias_logits", "is_decoder"):
        c.require(name, False)
    c.require("static_position_embeddings", True)
    c.require("share_encoder_decoder_embeddings", True)
    c.require("tie_word_embeddings", True)  # untied, transformers 5 unties the encoder's and decoder's tables too
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        c.require(name, 0.0)
    vocab_size = c.get("vocab_size", 58101)
    c.require("decoder_vocab_size", vocab_size)
    for name in ("extra_pos_embeddings", "classif_dropout", "classifier_dropout", "num_hidden_layers"):
        c.get(name)  # BART-era fields of old files: a sequence-classification head and an alias of encoder_layers
    return transformer().replace(
        vocab_size=vocab_size, embedding_size=None, **shared_fields_from_public(c), lm_head_bias=True,
        pad_token_id=c.get("pad_token_id", 58100), bos_token_id=c.get("bos_token_id"),
        eos_token_id=c.get("eos_token_id", 0), decoder_start_token_id=c.get("decoder_start_token_id", 58100))


def shared_fields_from_public(c: PublicConfig) -> dict:
    """The Config fields of the config.json fields Marian and BART share (BartConfig's layout and defaults)."""
    return dict(
        hidden_size=c.get("d_model", 1024), num_layers=c.get("encoder_layers", 12),
        num_decoder_layers=c.get("decoder_layers", 12),
        num_heads=c.same("encoder_attention_heads", "decoder_attention_heads", default=16),
        intermediate_size=c.same("encoder_ffn_dim", "decoder_ffn_dim", default=4096),
        max_length=c.get("max_position_embeddings", 1024), activation=c.activation("activation_function", "gelu"),
        dropout_rate=c.get("dropout", 0.1), attention_dropout_rate=c.get("attention_dropout", 0.0),
        activation_dropout_rate=c.get("activation_dropout", 0.0), layer_norm_eps=LAYER_NORM_EPS, scale_embeddings=c.get("scale_embedding", False),
        initializer_range=c.get("init_std", 0.02))


def config_to_public(cfg: Config) -> dict:
    return {**shared_fields_to_public(cfg), "decoder_vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_length, "share_encoder_decoder_embeddings": True}


def shared_fields_to_public(cfg: Config) -> dict:
    """The config.json fields Marian and BART share (all but max_position_embeddings, which BART offsets)."""
    return {"vocab_size": cfg.vocab_size, "d_model": cfg.hidden_size,
            "encoder_layers": cfg.num_layers, "decoder_layers": cfg.num_decoder_layers,
            "encoder_attention_heads": cfg.num_heads, "decoder_attention_heads": cfg.num_heads,
            "encoder_ffn_dim": cfg.intermediate_size, "decoder_ffn_dim": cfg.intermediate_size,
            "activation_function": public_activation(cfg.activation),
            "dropout": cfg.dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
            "activation_dropout": cfg.activation_dropout_rate,
            "scale_embedding": cfg.scale_embeddings, "init_std": cfg.initializer_range,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "pad_token_id": cfg.pad_token_id, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
            "forced_eos_token_id": cfg.eos_token_id, "decoder_start_token_id": cfg.decoder_start_token_id,
            "is_encoder_decoder": True}


def computed(cfg: Config) -> dict:
    """Tensors the public format stores but zoo computes: MarianModel saves its sinusoid tables."""
    table = sinusoidal_positions(cfg.max_length, cfg.hidden_size)
    return {f"{PREFIX}{stack}.embed_positions.weight": table for stack in ("encoder", "decoder")}


def tensors(cfg: Config, task) -> dict:
    m = PREFIX
    tree = {"token_embedding": embedding(f"{m}shared.weight"),
            "encoder": {f"layers_{i}": layer(f"{m}encoder.layers.{i}.") for i in range(cfg.num_layers)},
            "decoder": {f"layers_{i}": layer(f"{m}decoder.layers.{i}.", cross_attention=True)
                        for i in range(cfg.num_decoder_layers)}}
    if task == "seq2seq" and cfg.lm_head_bias:
        tree["lm_head"] = {"bias": Tensor(("final_logits_bias",), lead=(1,))}
    return tree


def layer(p: str, cross_attention: bool = False) -> dict:
    tree = {"attention": attention(f"{p}self_attn."), "attention_norm": layer_norm(f"{p}self_attn_layer_norm"),
            "mlp": {"wi": linear(f"{p}fc1"), "wo": linear(f"{p}fc2")}, "mlp_norm": layer_norm(f"{p}final_layer_norm")}
    if cross_attention:
        tree["cross_attention"] = attention(f"{p}encoder_attn.", cross_attention=True)
        tree["cross_attention_norm"] = layer_norm(f"{p}encoder_attn_layer_norm")
    return tree


def attention(p: str, cross_attention: bool = False) -> dict:
    projections = {"query": linear(f"{p}q_proj"), "key_value": fused_linear([f"{p}k_proj", f"{p}v_proj"])} \
        if cross_attention else {"qkv": fused_linear([f"{p}q_proj", f"{p}k_proj", f"{p}v_proj"])}
    return {**projections, "out": linear(f"{p}out_proj", rows=2)}


FAMILY = Family(name="transformer", model=EncoderDecoderTransformer, config=transformer, presets=PRESETS,
                tasks=(None, "seq2seq"),
                public=PublicFormat(model_type="marian", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED, computed=computed))
