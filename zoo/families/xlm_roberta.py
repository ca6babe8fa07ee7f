"""XLM-RoBERTa (Conneau et al., 2020): RoBERTa pre-trained on 100 languages with a 250k SentencePiece vocabulary.

The public format is RoBERTa's, under model_type `xlm-roberta` and the `XLMRoberta*` architectures.
"""

from zoo.config import Config
from zoo.families.bert import BASE
from zoo.families.record import Family
from zoo.families.roberta import public_format, roberta
from zoo.models import Transformer


def xlm_roberta(**fields) -> Config:
    return roberta(**fields).replace(family="xlm-roberta")


PRESETS = {"xlm-roberta-base": xlm_roberta(vocab_size=250002, max_length=514, **BASE)}

PUBLIC = public_format("xlm-roberta", "XLMRoberta", xlm_roberta, 30522)
FAMILY = Family(name="xlm-roberta", model=Transformer, config=xlm_roberta, presets=PRESETS,
                tasks=tuple(PUBLIC.architectures.values()), public=PUBLIC)
