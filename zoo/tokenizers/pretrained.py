"""The tokenizer of a checkpoint folder, picked from the files in it and what its config files say."""

from __future__ import annotations

import pathlib
from typing import Callable, Optional, Union

from zoo.files import read_json_object
from zoo.tokenizers.interface import ROLES, PathLike, Tokenizer, TranslationTokenizers
from zoo.tokenizers.rust import RustTokenizer, byte_level_bpe, from_tokenizer_json, roberta_byte_level_bpe, wordpiece
from zoo.tokenizers.sentencepiece import SentencePieceTokenizer, marian

# `vocab.json` + `merges.txt` is a byte-level BPE whose template depends on the model: the one of the model type
# that the folder names (see `model_type_of`), and GPT-2's for a type not listed here or none.
BYTE_LEVEL_BPE_OF_MODEL: dict[str, Callable[..., RustTokenizer]] = {
    "gpt2": byte_level_bpe,
    "roberta": roberta_byte_level_bpe,
    "bart": roberta_byte_level_bpe,  # BART's vocabulary and templates are RoBERTa's
}
MODEL_OF_TOKENIZER_CLASS = {
    "GPT2Tokenizer": "gpt2", "GPT2TokenizerFast": "gpt2",
    "RobertaTokenizer": "roberta", "RobertaTokenizerFast": "roberta",
    "BartTokenizer": "bart", "BartTokenizerFast": "bart",
    "T5Tokenizer": "t5", "T5TokenizerFast": "t5",
}
T5_EXTRA_IDS = 100  # T5's sentinels <extra_id_0..99>, at the end of the vocabulary


def read_tokenizer_config(folder: pathlib.Path) -> dict:
    """special_tokens_map.json updated with tokenizer_config.json, those of them the folder holds ({} if neither).
    Raises ValueError naming a file that is not a JSON object."""
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).exists():
            config.update(read_json_object(folder / name))
    return config


def special_tokens_from_config(config: dict, keep_null: bool = False) -> dict[str, Optional[str]]:
    """role -> token of the `{role}_token` entries of a tokenizer config (a string, or an object with "content");
    `keep_null` keeps a role the config sets to null as None (Llama's `"pad_token": null`)."""
    roles = {}
    for role in ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            roles[role] = value
        elif keep_null and f"{role}_token" in config and value is None:
            roles[role] = None
    return roles


def model_type_of(folder: pathlib.Path, config: dict) -> Optional[str]:
    """The model type a folder's tokenizer is for: `MODEL_OF_TOKENIZER_CLASS` of the tokenizer config's
    `tokenizer_class`, else config.json's `model_type`, else None. Raises ValueError naming a config.json that does
    not parse."""
    if config.get("tokenizer_class") in MODEL_OF_TOKENIZER_CLASS:
        return MODEL_OF_TOKENIZER_CLASS[config["tokenizer_class"]]
    if (folder / "config.json").is_file():
        model_type = read_json_object(folder / "config.json").get("model_type")
        return model_type if isinstance(model_type, str) else None
    return None


def from_pretrained(folder: PathLike) -> Union[Tokenizer, TranslationTokenizers]:
    """The tokenizer of a checkpoint folder, picked from the files in it:

    `source.spm` + `target.spm` (Marian) > `tokenizer.json` > `vocab.json` + `merges.txt` (GPT-2's byte-level BPE,
    or RoBERTa's when the folder says roberta: see `BYTE_LEVEL_BPE_OF_MODEL`) > `vocab.txt` (BERT WordPiece) >
    `spiece.model` or another single `*.model` (SentencePiece; ALBERT's when it has [CLS]; T5's, A </s> with its
    `extra_ids` sentinels, when the folder says t5).
    `tokenizer_config.json` / `special_tokens_map.json` give special tokens and `do_lower_case` when present; with a
    `tokenizer.json` they give all its special-token roles when they name any (a role set to null or left out has
    none); the tokenizer.json's post-processor, not `add_bos_token` / `add_eos_token`, gives its template (see
    `from_tokenizer_json`).

    Raises:
      FileNotFoundError: no tokenizer file in the folder. ValueError: a file that does not parse.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    config = read_tokenizer_config(folder)
    specials = special_tokens_from_config(config)
    has = lambda name: (folder / name).is_file()  # noqa: E731
    if has("source.spm") and has("target.spm"):
        return marian(folder / "source.spm", folder / "target.spm",
                      folder / "vocab.json" if has("vocab.json") else None)
    if has("tokenizer.json"):
        return from_tokenizer_json(folder / "tokenizer.json", special_tokens_from_config(config, keep_null=True))
    if has("vocab.json") and has("merges.txt"):
        bpe = BYTE_LEVEL_BPE_OF_MODEL.get(model_type_of(folder, config), byte_level_bpe)
        return bpe(folder / "vocab.json", folder / "merges.txt", specials or None)
    if has("vocab.txt"):
        return wordpiece(folder / "vocab.txt", lower_case=config.get("do_lower_case"),
                         strip_accents=config.get("strip_accents"), special_tokens=specials or None)
    models = [folder / "spiece.model"] if has("spiece.model") else sorted(folder.glob("*.model"))
    if len(models) == 1:
        if model_type_of(folder, config) == "t5":
            return SentencePieceTokenizer(models[0], template="eos", special_tokens=specials or None,
                                          extra_ids=config.get("extra_ids", T5_EXTRA_IDS))
        albert_like = config.get("do_lower_case", None)
        sp = SentencePieceTokenizer(models[0], template=config.get("template"),
                                    extra_ids=config.get("extra_ids", 0))
        lower = albert_like if albert_like is not None else sp.template == "bert"
        strip = config.get("strip_accents", not config.get("keep_accents", False) and sp.template == "bert")
        return SentencePieceTokenizer(models[0], template=sp.template, lower_case=bool(lower),
                                      strip_accents=bool(strip),
                                      albert_quotes=config.get("albert_quotes", sp.template == "bert"),
                                      extra_ids=sp.extra_ids)
    found = sorted(p.name for p in folder.iterdir())
    raise FileNotFoundError(f"no tokenizer in {folder}: expected one of source.spm+target.spm, tokenizer.json, "
                            f"vocab.json+merges.txt, vocab.txt, spiece.model (found {found})")
