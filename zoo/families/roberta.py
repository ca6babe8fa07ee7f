"""RoBERTa (Liu et al., 2019): BERT's encoder, pre-trained longer on more text with masked LM only, a byte-level BPE
vocabulary and fairseq's positions, which start past the padding index (`padding_offset_positions`).

The public format (that of `transformers`) is BERT's under `roberta.` with one token type and other heads: the LM head
`lm_head.dense`, `lm_head.layer_norm`, the decoder tied to the word embeddings and `lm_head.bias`; the classifier
`classifier.dense` + tanh on <s> (zoo's pooler) then `classifier.out_proj` (in training RobertaClassificationHead also
drops <s> out before its dense, zoo only after the tanh).
XLM-RoBERTa is this layout under its own model_type (`xlm_roberta.py`).
"""

import functools
from typing import Callable

from zoo.config import Config
from zoo.families.bert import BASE, DEFAULTS, LARGE, body, config_to_public, heads, mlm_head
from zoo.families.bert import config_from_public as bert_config_from_public
from zoo.families.mapping import PublicConfig, linear
from zoo.families.record import Family, PublicFormat
from zoo.models import Transformer


def roberta(**fields) -> Config:
    return Config(family="roberta", norm_position="post", position_embedding="learned", padding_offset_positions=True,
                  type_vocab_size=1, embedding_norm=True, pooling="cls", activation="gelu", layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, **fields)


PRESETS = {  # max_length 514: 512 tokens after the padding index (1) and position 0
    "roberta-base": roberta(vocab_size=50265, max_length=514, **BASE),
    "roberta-large": roberta(vocab_size=50265, max_length=514, **LARGE),
    "roberta-tiny": roberta(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                            max_length=130),
}

# The public format
PREFIX = "roberta."
ARCHITECTURES = {"Model": None, "ForMaskedLM": "mlm", "ForSequenceClassification": "sequence_classification",
                 "ForTokenClassification": "token_classification", "ForQuestionAnswering": "question_answering"}
IGNORED = (r"(roberta\.)?embeddings\.(position_ids|token_type_ids)",  # buffers
           r"lm_head\.decoder\.(weight|bias)")  # copies of the word embeddings and lm_head.bias


def config_from_public(c: PublicConfig, task, base: Config, defaults: dict) -> Config:
    cfg = bert_config_from_public(c, task, base, defaults)
    if task == "mlm" and cfg.activation != "gelu":
        raise ValueError(f"config.json field hidden_act={c.get('hidden_act')!r}: RoBERTa's LM head applies gelu "
                         "whatever hidden_act says, zoo's MLM head the model's activation")
    return cfg


def tensors(cfg: Config, task) -> dict:
    tree = body(cfg, task, PREFIX)
    if task == "sequence_classification":
        return {**tree, "pooler": {"dense": linear("classifier.dense")}, "classifier": linear("classifier.out_proj")}
    return {**tree, **heads(cfg, task, mlm_head(cfg, "lm_head.", "lm_head.", norm="layer_norm"))}


def public_format(model_type: str, name: str, config: Callable[..., Config], vocab_size: int) -> PublicFormat:
    """RoBERTa's layout under `model_type`, its architectures `{name}Model`, `{name}ForMaskedLM`, ..., its configs built
    on `config()`; `vocab_size` is the default of the format's config class (RobertaConfig: 50265)."""
    defaults = {**DEFAULTS, "vocab_size": vocab_size, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    return PublicFormat(model_type=model_type, prefix=PREFIX,
                        architectures={f"{name}{suffix}": task for suffix, task in ARCHITECTURES.items()},
                        config_from_public=functools.partial(config_from_public, base=config(), defaults=defaults),
                        config_to_public=config_to_public, tensors=tensors, ignored=IGNORED)


FAMILY = Family(name="roberta", model=Transformer, config=roberta, presets=PRESETS,
                tasks=tuple(ARCHITECTURES.values()), public=public_format("roberta", "Roberta", roberta, 50265))
