"""DistilBERT (Sanh et al., 2019): BERT distilled into half its layers, with neither token types nor a pooler.

The public format (that of `transformers`): `q_lin`/`k_lin`/`v_lin`/`out_lin`, `sa_layer_norm`, `ffn.lin1`/`lin2` and
`output_layer_norm`; an MLM head of its own (`vocab_transform`, `vocab_layer_norm`, `vocab_projector`); a sequence
classifier that reads [CLS] through `pre_classifier` and a ReLU: zoo's pooler (`pooler_activation="relu"`), which the
bare model lacks (`bare_model_pooler=False`). `sinusoidal_pos_embds=True` says only how transformers initializes the
position table (sin and cos interleaved): the file holds the table, and transformers 5 reads it from there and trains
it as a learned one; so does zoo, and its files say false. In training, zoo drops the classifiers' inputs out at
`seq_classif_dropout` and the span head's not at all, where transformers uses `dropout` and `qa_dropout` for them.
"""

from zoo.config import Config
from zoo.families.bert import check_two_labels, heads
from zoo.families.mapping import PublicConfig, Tensor, embedding, fused_linear, layer_norm, linear, public_activation
from zoo.families.record import Family, PublicFormat
from zoo.heads import has_pooler
from zoo.models import Transformer


def distilbert(**fields) -> Config:
    return Config(family="distilbert", norm_position="post", position_embedding="learned", embedding_norm=True,
                  pooling="cls", pooler_activation="relu", bare_model_pooler=False, activation="gelu",
                  layer_norm_eps=1e-12, classifier_dropout_rate=0.2, **fields)


PRESETS = {
    "distilbert-base-uncased": distilbert(vocab_size=30522, hidden_size=768, num_layers=6, num_heads=12,
                                          intermediate_size=3072, max_length=512),
    "distilbert-tiny": distilbert(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                                  max_length=128),
}

# The public format
PREFIX = "distilbert."
ARCHITECTURES = {"DistilBertModel": None, "DistilBertForMaskedLM": "mlm",
                 "DistilBertForSequenceClassification": "sequence_classification",
                 "DistilBertForTokenClassification": "token_classification",
                 "DistilBertForQuestionAnswering": "question_answering"}
IGNORED = (r"(distilbert\.)?embeddings\.position_ids",  # a buffer
           r"vocab_projector\.weight")  # a copy of the word embeddings when tied


def config_from_public(c: PublicConfig, task) -> Config:
    check_two_labels(c, task, ("question_answering",))
    for name in ("sinusoidal_pos_embds", "qa_dropout", "tie_weights_"):  # see above; tie_weights_: a field of old files
        c.get(name)
    return distilbert().replace(
        vocab_size=c.get("vocab_size", 30522), hidden_size=c.get("dim", 768), num_layers=c.get("n_layers", 6),
        num_heads=c.get("n_heads", 12), intermediate_size=c.get("hidden_dim", 3072),
        max_length=c.get("max_position_embeddings", 512), activation=c.activation("activation", "gelu"),
        dropout_rate=c.get("dropout", 0.1), attention_dropout_rate=c.get("attention_dropout", 0.1),
        classifier_dropout_rate=c.get("seq_classif_dropout", 0.2), initializer_range=c.get("initializer_range", 0.02),
        tie_word_embeddings=c.get("tie_word_embeddings", True), pad_token_id=c.get("pad_token_id") or 0,
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"))


def config_to_public(cfg: Config) -> dict:
    return {"vocab_size": cfg.vocab_size, "dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
            "hidden_dim": cfg.intermediate_size, "max_position_embeddings": cfg.max_length,
            "sinusoidal_pos_embds": False, "activation": public_activation(cfg.activation),
            "dropout": cfg.dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
            "seq_classif_dropout": cfg.classifier_dropout_rate, "qa_dropout": 0.0,
            "initializer_range": cfg.initializer_range, "tie_word_embeddings": cfg.tie_word_embeddings,
            "pad_token_id": cfg.pad_token_id, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}


def tensors(cfg: Config, task) -> dict:
    e = f"{PREFIX}embeddings."
    tree = {"token_embedding": embedding(f"{e}word_embeddings.weight"),
            "embeddings": {"position_embedding": embedding(f"{e}position_embeddings.weight"),
                           "embedding_norm": layer_norm(f"{e}LayerNorm")},
            "encoder": {f"layers_{i}": layer(f"{PREFIX}transformer.layer.{i}.") for i in range(cfg.num_layers)}}
    if cfg.pooling == "cls" and has_pooler(cfg, task):
        tree["pooler"] = {"dense": linear("pre_classifier")}
    decoder = {"bias": Tensor(("vocab_projector.bias",))}
    if not cfg.tie_word_embeddings:
        decoder["decoder"] = {"kernel": Tensor(("vocab_projector.weight",), 1, transpose=True)}
    mlm = {"dense": linear("vocab_transform"), "norm": layer_norm("vocab_layer_norm"), "decoder": decoder}
    return {**tree, **heads(cfg, task, mlm)}


def layer(p: str) -> dict:
    a = f"{p}attention."
    return {"attention": {"qkv": fused_linear([f"{a}q_lin", f"{a}k_lin", f"{a}v_lin"]),
                          "out": linear(f"{a}out_lin", rows=2)},
            "attention_norm": layer_norm(f"{p}sa_layer_norm"),
            "mlp": {"wi": linear(f"{p}ffn.lin1"), "wo": linear(f"{p}ffn.lin2")},
            "mlp_norm": layer_norm(f"{p}output_layer_norm")}


FAMILY = Family(name="distilbert", model=Transformer, config=distilbert, presets=PRESETS,
                tasks=tuple(ARCHITECTURES.values()),
                public=PublicFormat(model_type="distilbert", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
