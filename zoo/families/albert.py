"""ALBERT (Lan et al., 2020): BERT with a factorized embedding, one layer shared by all depths, and sentence-order
prediction in place of next-sentence prediction (same head, other labels).

The public format (that of `transformers`): BERT's embeddings at `embedding_size`, the projection up
(`embedding_hidden_mapping_in`), and one shared layer (`albert_layer_groups.0.albert_layers.0`).
"""

from zoo.config import Config
from zoo.families.bert import attention, check_two_labels, embeddings, heads, mlm_head
from zoo.families.bert import config_to_public as bert_config_to_public
from zoo.families.mapping import PublicConfig, embedding, layer_norm, linear
from zoo.families.record import Family, PublicFormat
from zoo.heads import ENCODER_HEADS, has_pooler
from zoo.models import Transformer


def albert(**fields) -> Config:
    return Config(family="albert", norm_position="post", position_embedding="learned", type_vocab_size=2,
                  embedding_norm=True, pooling="cls", activation="gelu_tanh", layer_norm_eps=1e-12,
                  embedding_size=128, share_layers=True, dropout_rate=0.0, attention_dropout_rate=0.0,
                  classifier_dropout_rate=0.1, **fields)


PRESETS = {
    "albert-base-v2": albert(vocab_size=30000, hidden_size=768, num_layers=12, num_heads=12,
                             intermediate_size=3072, max_length=512),
    "albert-large-v2": albert(vocab_size=30000, hidden_size=1024, num_layers=24, num_heads=16,
                              intermediate_size=4096, max_length=512),
    "albert-tiny": albert(vocab_size=1024, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128,
                          max_length=128).replace(embedding_size=32),
}

# The public format
PREFIX = "albert."
ARCHITECTURES = {"AlbertModel": None, "AlbertForPreTraining": "pretraining", "AlbertForMaskedLM": "mlm",
                 "AlbertForSequenceClassification": "sequence_classification",
                 "AlbertForTokenClassification": "token_classification",
                 "AlbertForQuestionAnswering": "question_answering"}
IGNORED = (r"(albert\.)?embeddings\.position_ids", r"predictions\.decoder\.(weight|bias)")


def config_from_public(c: PublicConfig, task) -> Config:
    c.require("position_embedding_type", "absolute")
    c.require("num_hidden_groups", 1)
    c.require("inner_group_num", 1)
    check_two_labels(c, task, ("question_answering", "pretraining"))
    for name in ("down_scale_factor", "gap_size", "net_structure_type", "num_memory_blocks"):
        c.get(name)  # fields of the original albert-*-v2 files that no ALBERT implementation uses
    hidden_size, embedding_size = c.get("hidden_size", 4096), c.get("embedding_size", 128)
    if embedding_size == hidden_size:
        raise ValueError(f"config.json field embedding_size={embedding_size} equals hidden_size: ALBERT still projects "
                         "then (embedding_hidden_mapping_in), which zoo does only when they differ")
    return albert().replace(
        vocab_size=c.get("vocab_size", 30000), hidden_size=hidden_size, embedding_size=embedding_size,
        num_layers=c.get("num_hidden_layers", 12), num_heads=c.get("num_attention_heads", 64),
        intermediate_size=c.get("intermediate_size", 16384), max_length=c.get("max_position_embeddings", 512),
        type_vocab_size=c.get("type_vocab_size", 2), activation=c.activation("hidden_act", "gelu_new"),
        dropout_rate=c.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=c.get("attention_probs_dropout_prob", 0.0),
        classifier_dropout_rate=c.get("classifier_dropout_prob", 0.1), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02), tie_word_embeddings=c.get("tie_word_embeddings", True),
        pad_token_id=c.get("pad_token_id") or 0, bos_token_id=c.get("bos_token_id", 2),
        eos_token_id=c.get("eos_token_id", 3))


def config_to_public(cfg: Config) -> dict:
    """BERT's fields, plus the factorized embedding and the one shared layer; the classifier dropout is renamed."""
    public = {k: v for k, v in bert_config_to_public(cfg).items()
              if k not in ("classifier_dropout", "is_decoder", "add_cross_attention")}
    return {**public, "embedding_size": cfg.embedding_size, "classifier_dropout_prob": cfg.classifier_dropout_rate,
            "num_hidden_groups": 1, "inner_group_num": 1}


def tensors(cfg: Config, task) -> dict:
    a = PREFIX
    p = f"{a}encoder.albert_layer_groups.0.albert_layers.0."
    tree = {"token_embedding": embedding(f"{a}embeddings.word_embeddings.weight"),
            "embeddings": {**embeddings(f"{a}embeddings."),
                           "projection": linear(f"{a}encoder.embedding_hidden_mapping_in")},
            "encoder": {"layers": {"attention": attention(f"{p}attention.", f"{p}attention.dense"),
                                   "attention_norm": layer_norm(f"{p}attention.LayerNorm"),
                                   "mlp": {"wi": linear(f"{p}ffn"), "wo": linear(f"{p}ffn_output")},
                                   "mlp_norm": layer_norm(f"{p}full_layer_layer_norm")}}}
    if cfg.pooling == "cls" and has_pooler(cfg, task):
        tree["pooler"] = {"dense": linear(f"{a}pooler")}
    return {**tree, **heads(cfg, task, mlm_head(cfg, "predictions.", "predictions."), "sop_classifier.classifier")}


FAMILY = Family(name="albert", model=Transformer, config=albert, presets=PRESETS, tasks=(None, *ENCODER_HEADS),
                public=PublicFormat(model_type="albert", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
