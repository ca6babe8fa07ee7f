"""The one registry of model families: `zoo.list_models()`, `zoo.create`, `from_pretrained` and `save_pretrained`
all read it. A family is one file here that builds a `Family` record (see `record.py`)."""

from zoo.families import (albert, bart, bert, distilbert, gpt2, llama, mistral, qwen2, roberta, t5, transformer,
                          xlm_roberta)
from zoo.families.record import Family, PublicFormat

FAMILIES: dict[str, Family] = {f.name: f for f in (bert.FAMILY, gpt2.FAMILY, albert.FAMILY, transformer.FAMILY,
                                                    roberta.FAMILY, xlm_roberta.FAMILY, distilbert.FAMILY,
                                                    bart.FAMILY, t5.FAMILY, llama.FAMILY, mistral.FAMILY,
                                                    qwen2.FAMILY)}
# config.json model_type -> the family written in that format
PUBLIC_FORMATS: dict[str, Family] = {f.public.model_type: f for f in FAMILIES.values() if f.public is not None}


def family(name: str) -> Family:
    """The family called `name`; a ValueError lists the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; the families are: {', '.join(FAMILIES)}")
    return FAMILIES[name]
