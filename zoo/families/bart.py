"""BART (Lewis et al., 2019): a denoising autoencoder on Vaswani's post-LN encoder-decoder with GPT's choices: learned
positions, gelu, a LayerNorm on the embeddings of each stack, unscaled embeddings, and fairseq's vocabulary (pad 1,
<s> 0, </s> 2; the decoder starts from </s>).

The public format (that of `transformers`) is Marian's layout (`transformer.py`) with stored positions: each stack has
its own learned table `embed_positions` whose first two rows no token uses (`position_offset`), and its own
`layernorm_embedding`; one `shared` token embedding, tied to the LM head, plus `final_logits_bias`.
BartForSequenceClassification reads the decoder state at the last </s> through `classification_head.dense` + tanh and
`classification_head.out_proj`; when no decoder_input_ids are given, zoo (as BART) shifts input_ids right.
"""

from zoo.config import Config
from zoo.families import transformer
from zoo.families.mapping import PublicConfig, embedding, layer_norm, linear
from zoo.families.record import Family, PublicFormat
from zoo.models import EncoderDecoderTransformer

POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's: the table has max_position_embeddings + 2 rows


def bart(**fields) -> Config:
    return Config(family="bart", norm_position="post", position_embedding="learned", position_offset=POSITION_OFFSET,
                  embedding_norm=True, scale_embeddings=False, pooling="none", activation="gelu", layer_norm_eps=1e-5,
                  attention_dropout_rate=0.0, classifier_dropout_rate=0.0, lm_head_bias=True, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, **fields)


PRESETS = {  # max_length 1026: 1024 tokens past the two offset rows
    "bart-base": bart(vocab_size=50265, hidden_size=768, num_layers=6, num_decoder_layers=6, num_heads=12,
                      intermediate_size=3072, max_length=1026, activation_dropout_rate=0.1),
    "bart-large": bart(vocab_size=50265, hidden_size=1024, num_layers=12, num_decoder_layers=12, num_heads=16,
                       intermediate_size=4096, max_length=1026, activation_dropout_rate=0.1),
    "bart-tiny": bart(vocab_size=1024, hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                      intermediate_size=128, max_length=130),
}

# The public format
PREFIX = transformer.PREFIX
ARCHITECTURES = {"BartModel": None, "BartForConditionalGeneration": "seq2seq",
                 "BartForSequenceClassification": "sequence_classification"}
IGNORED = transformer.IGNORED[1:]  # the copies of the shared embedding; BART stores its position tables


def config_from_public(c: PublicConfig, task) -> Config:
    # Fields of the original (fairseq-converted) config files, which name the switches BART always has
    c.require("normalize_embedding", True)
    c.require("static_position_embeddings", False)
    c.require("extra_pos_embeddings", POSITION_OFFSET)
    for name in ("normalize_before", "add_final_layer_norm", "add_bias_logits", "is_decoder"):
        c.require(name, False)
    c.require("tie_word_embeddings", True)
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        c.require(name, 0.0)
    for name in ("classif_dropout", "num_hidden_layers", "output_past", "force_bos_token_to_be_generated"):
        c.get(name)  # old files: the classifier's dropout under its old name, an alias of encoder_layers, generation
    fields = transformer.shared_fields_from_public(c)
    return bart().replace(
        **{**fields, "max_length": fields["max_length"] + POSITION_OFFSET}, vocab_size=c.get("vocab_size", 50265),
        classifier_dropout_rate=c.get("classifier_dropout", 0.0), pad_token_id=c.get("pad_token_id", 1),
        bos_token_id=c.get("bos_token_id", 0), eos_token_id=c.get("eos_token_id", 2),
        decoder_start_token_id=c.get("decoder_start_token_id", 2))


def config_to_public(cfg: Config) -> dict:
    return {**transformer.shared_fields_to_public(cfg), "max_position_embeddings": cfg.max_tokens,
            "classifier_dropout": cfg.classifier_dropout_rate}


def tensors(cfg: Config, task) -> dict:
    tree = transformer.tensors(cfg, task)
    for stack in ("encoder", "decoder"):
        tree[f"{stack}_embeddings"] = {"position_embedding": embedding(f"{PREFIX}{stack}.embed_positions.weight"),
                                       "embedding_norm": layer_norm(f"{PREFIX}{stack}.layernorm_embedding")}
    if task == "sequence_classification":
        tree["classification_head"] = {"dense": linear("classification_head.dense"),
                                       "out_proj": linear("classification_head.out_proj")}
    return tree


FAMILY = Family(name="bart", model=EncoderDecoderTransformer, config=bart, presets=PRESETS,
                tasks=tuple(ARCHITECTURES.values()),
                public=PublicFormat(model_type="bart", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
