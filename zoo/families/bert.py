"""BERT (Devlin et al., 2019): a bidirectional post-LN encoder pre-trained with masked LM and next-sentence prediction.

The public format is that of `transformers`: separate query/key/value Linears, post-LN names
(`attention.output.LayerNorm`, `output.LayerNorm`), heads under `cls.` (and `classifier`, `qa_outputs`). ALBERT,
RoBERTa and DistilBERT reuse the pieces here.
"""

from zoo.config import Config
from zoo.families.mapping import (PublicConfig, Tensor, embedding, fused_linear, layer_norm, linear,
                                  public_activation)
from zoo.families.record import Family, PublicFormat
from zoo.heads import ENCODER_HEADS, has_pooler
from zoo.models import Transformer


def bert(**fields) -> Config:
    return Config(family="bert", norm_position="post", position_embedding="learned", type_vocab_size=2,
                  embedding_norm=True, pooling="cls", activation="gelu", layer_norm_eps=1e-12, **fields)


# The sizes of Devlin et al.'s two models, which RoBERTa and XLM-RoBERTa keep.
BASE = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
LARGE = dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
PRESETS = {
    "bert-base-uncased": bert(vocab_size=30522, max_length=512, **BASE),
    "bert-large-uncased": bert(vocab_size=30522, max_length=512, **LARGE),
    "bert-tiny": bert(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                      max_length=128),
}

# The public format
PREFIX = "bert."
ARCHITECTURES = {"BertModel": None, "BertForPreTraining": "pretraining", "BertForMaskedLM": "mlm",
                 "BertForSequenceClassification": "sequence_classification",
                 "BertForTokenClassification": "token_classification", "BertForQuestionAnswering": "question_answering"}
IGNORED = (r"(bert\.)?embeddings\.position_ids",  # a buffer of old checkpoints
           r"cls\.predictions\.decoder\.(weight|bias)")  # copies of the word embeddings and cls.predictions.bias
# Defaults of transformers' config class for the fields whose default differs between BERT and its kin (RoBERTa).
DEFAULTS = {"vocab_size": 30522, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None}


def config_from_public(c: PublicConfig, task, base: Config | None = None, defaults: dict = DEFAULTS) -> Config:
    """BERT's config.json fields onto `base` (the family's switches; `bert()` when None)."""
    c.require("position_embedding_type", "absolute")
    c.require("is_decoder", False)
    c.require("add_cross_attention", False)
    check_two_labels(c, task, ("question_answering",))
    pad_token_id = c.get("pad_token_id", defaults["pad_token_id"])
    return (base or bert()).replace(
        vocab_size=c.get("vocab_size", defaults["vocab_size"]), hidden_size=c.get("hidden_size", 768),
        embedding_size=None, num_layers=c.get("num_hidden_layers", 12), num_heads=c.get("num_attention_heads", 12),
        intermediate_size=c.get("intermediate_size", 3072), max_length=c.get("max_position_embeddings", 512),
        type_vocab_size=c.get("type_vocab_size", 2), activation=c.activation("hidden_act", "gelu"),
        dropout_rate=c.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=c.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout_rate=c.get("classifier_dropout"), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02), tie_word_embeddings=c.get("tie_word_embeddings", True),
        pad_token_id=defaults["pad_token_id"] if pad_token_id is None else pad_token_id,
        bos_token_id=c.get("bos_token_id", defaults["bos_token_id"]),
        eos_token_id=c.get("eos_token_id", defaults["eos_token_id"]))


def config_to_public(cfg: Config) -> dict:
    return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_length, "type_vocab_size": cfg.type_vocab_size,
            "hidden_act": public_activation(cfg.activation), "hidden_dropout_prob": cfg.dropout_rate,
            "attention_probs_dropout_prob": cfg.attention_dropout_rate,
            "classifier_dropout": cfg.classifier_dropout_rate,
            "layer_norm_eps": cfg.layer_norm_eps, "initializer_range": cfg.initializer_range,
            "tie_word_embeddings": cfg.tie_word_embeddings, "pad_token_id": cfg.pad_token_id,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "is_decoder": False,
            "add_cross_attention": False}


def tensors(cfg: Config, task) -> dict:
    mlm = mlm_head(cfg, "cls.predictions.transform.", "cls.predictions.")
    return {**body(cfg, task, PREFIX), **heads(cfg, task, mlm, "cls.seq_relationship")}


def body(cfg: Config, task, b: str) -> dict:
    """Embeddings, layers and pooler under the prefix `b` (`bert.`; RoBERTa's `roberta.`)."""
    tree = {"token_embedding": embedding(f"{b}embeddings.word_embeddings.weight"),
            "embeddings": embeddings(f"{b}embeddings."),
            "encoder": {f"layers_{i}": layer(f"{b}encoder.layer.{i}.") for i in range(cfg.num_layers)}}
    if cfg.pooling == "cls" and has_pooler(cfg, task):
        tree["pooler"] = {"dense": linear(f"{b}pooler.dense")}
    return tree


def layer(p: str) -> dict:
    return {"attention": attention(f"{p}attention.self.", f"{p}attention.output.dense"),
            "attention_norm": layer_norm(f"{p}attention.output.LayerNorm"),
            "mlp": {"wi": linear(f"{p}intermediate.dense"), "wo": linear(f"{p}output.dense")},
            "mlp_norm": layer_norm(f"{p}output.LayerNorm")}


def embeddings(p: str) -> dict:
    return {"position_embedding": embedding(f"{p}position_embeddings.weight"),
            "token_type_embedding": embedding(f"{p}token_type_embeddings.weight"),
            "embedding_norm": layer_norm(f"{p}LayerNorm")}


def attention(p: str, out: str) -> dict:
    return {"qkv": fused_linear([f"{p}query", f"{p}key", f"{p}value"]), "out": linear(out, rows=2)}


def mlm_head(cfg: Config, transform: str, predictions: str, norm: str = "LayerNorm") -> dict:
    """Dense, activation and LayerNorm (`transform`, `norm`), then the decoder tied to the word embeddings, its bias.

    Untied, transformers 5 ties neither the decoder's weight nor its bias: the forward pass adds `decoder.bias`, and
    `predictions.bias` is kept (written as a copy) only so that the file has every key.
    """
    decoder = {"bias": Tensor((f"{predictions}bias",))} if cfg.tie_word_embeddings else {
        "bias": Tensor((f"{predictions}decoder.bias",), aliases=(f"{predictions}bias",)),
        "decoder": {"kernel": Tensor((f"{predictions}decoder.weight",), 1, transpose=True)}}
    return {"dense": linear(f"{transform}dense"), "norm": layer_norm(f"{transform}{norm}"), "decoder": decoder}


def check_two_labels(c: PublicConfig, task, tasks: tuple) -> None:
    """Heads that zoo builds with 2 outputs (span start/end; ALBERT's sentence order) but transformers sizes by
    num_labels."""
    if task in tasks and c.num_labels() != 2:
        raise ValueError(f"config.json num_labels={c.num_labels()}: zoo's {task} head has 2 outputs")


def heads(cfg: Config, task, mlm: dict, seq_relationship: str | None = None) -> dict:
    """The head of `task`; the names of the fine-tuning heads are the same in BERT, ALBERT, RoBERTa and DistilBERT.
    `seq_relationship`: the pre-training head's second classifier, when the family has that task."""
    if task == "pretraining":
        return {"mlm_head": mlm, "seq_relationship_head": linear(seq_relationship)}
    return {"mlm": {"mlm_head": mlm},
            "sequence_classification": {"classifier": linear("classifier")},
            "token_classification": {"classifier": linear("classifier")},
            "question_answering": {"qa_head": linear("qa_outputs")}}.get(task, {})


FAMILY = Family(name="bert", model=Transformer, config=bert, presets=PRESETS, tasks=(None, *ENCODER_HEADS),
                public=PublicFormat(model_type="bert", prefix=PREFIX, architectures=ARCHITECTURES,
                                    config_from_public=config_from_public, config_to_public=config_to_public,
                                    tensors=tensors, ignored=IGNORED))
