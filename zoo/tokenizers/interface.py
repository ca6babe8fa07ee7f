"""The interface every zoo tokenizer has (`Tokenizer`), the pair a translation model takes
(`TranslationTokenizers`), and what the backends share: truncation, the JSON vocabulary and the config file they
write."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from zoo.files import read_json_object

PathLike = Union[str, os.PathLike]
Text = Union[str, tuple[str, str]]
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")  # the keys of `Tokenizer.special_tokens`


class Tokenizer:
    """The interface every zoo tokenizer has. Subclasses give `encode_plain`, `decode` and the vocabulary.

    A template of special ids wraps the plain ids: single = prefix A suffix, pair = prefix A middle B suffix, with
    token type 0 up to and including `middle` and 1 after it (BERT: [CLS] A [SEP] B [SEP]).
    """

    prefix: tuple[int, ...] = ()
    middle: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()
    special_tokens: dict[str, int]  # role ("pad", "cls", ...) -> id, only roles the vocabulary has

    # -- vocabulary ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> Optional[int]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    def _role(self, role: str) -> Optional[int]:
        return self.special_tokens.get(role)

    pad_id = property(lambda self: self._role("pad"), doc="padding id (None if the vocabulary has none)")
    unk_id = property(lambda self: self._role("unk"))
    cls_id = property(lambda self: self._role("cls"))
    sep_id = property(lambda self: self._role("sep"))
    mask_id = property(lambda self: self._role("mask"))
    bos_id = property(lambda self: self._role("bos"))
    eos_id = property(lambda self: self._role("eos"))

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that are never masked, predicted as words or counted as text: the special and control tokens."""
        return frozenset(self.special_tokens.values()) | frozenset(self.prefix + self.middle + self.suffix)

    def word_start_table(self) -> np.ndarray:
        """[vocab_size] bool, True where a token starts a word (for whole-word masking); special tokens are True."""
        table = np.array([self._starts_word(self.id_to_token(i)) for i in range(self.vocab_size)], bool)
        table[list(self.special_ids)] = True
        return table

    def _starts_word(self, token: str) -> bool:
        return True

    # -- encoding --------------------------------------------------------------------------------------------------
    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text without special tokens, encoded as one batch (the data pipeline tokenizes with this)."""
        raise NotImplementedError

    def num_special_tokens(self, pair: bool = False) -> int:
        return len(self.prefix) + len(self.suffix) + (len(self.middle) if pair else 0)

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_token(i) for i in self.encode_plain([text])[0]]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.encode_plain([text])[0]
        return [*self.prefix, *ids, *self.suffix] if add_special_tokens else ids

    def encode_pair(self, text_a: str, text_b: str, add_special_tokens: bool = True) -> tuple[list[int], list[int]]:
        """(ids, token_type_ids) of a segment pair: type 0 for A and its specials, 1 for B."""
        a, b = self.encode_plain([text_a, text_b])
        return self.build_pair(a, b) if add_special_tokens else (a + b, [0] * len(a) + [1] * len(b))

    def build_pair(self, a: Sequence[int], b: Optional[Sequence[int]] = None) -> tuple[list[int], list[int]]:
        """Wraps plain ids in the special-token template: (ids, token_type_ids)."""
        first = [*self.prefix, *a]
        if b is None:
            return first + list(self.suffix), [0] * (len(first) + len(self.suffix))
        first += self.middle
        second = [*b, *self.suffix]
        return first + second, [0] * len(first) + [1] * len(second)

    @property
    def has_token_types(self) -> bool:
        """Whether this tokenizer's models take `token_type_ids` (BERT and ALBERT, whose template starts with [CLS])."""
        return bool(self.prefix)

    def encode_batch(self, texts: Sequence[Text], *, max_length: Optional[int] = None, padding: str = "max_length",
                     truncation: bool = True, add_special_tokens: bool = True,
                     return_token_type_ids: Optional[bool] = None,
                     padding_side: str = "right") -> dict[str, np.ndarray]:
        """Encodes texts (or (a, b) pairs) into int32 arrays [batch, length].

        Args:
          padding: "max_length" pads to `max_length`; "longest" to the longest row (at most `max_length`).
          truncation: cut the longer segment first until a row fits `max_length` (BERT's "longest_first");
            False makes a row that does not fit a ValueError.
          return_token_type_ids: default `has_token_types` (GPT-2 and Marian models take none).
          padding_side: "right", or "left" for prompts that a decoder continues (`zoo.generate` wants GPT prompts
            left-padded, so every row's last token is in the last column).
        Returns:
          {"input_ids", "attention_mask"[, "token_type_ids"]}; padding holds `pad_id` (or 0) and mask 0.
        Raises:
          ValueError: `max_length` leaves no room for text after the special tokens.
        """
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
        flat = [a for a, _ in pairs] + [b for _, b in pairs if b is not None]
        plain = iter(self.encode_plain(flat))
        firsts = [next(plain) for _ in pairs]
        seconds = [next(plain) if b is not None else None for _, b in pairs]
        rows, types = [], []
        for a, b in zip(firsts, seconds):
            if max_length is not None:
                budget = max_length - (self.num_special_tokens(b is not None) if add_special_tokens else 0)
                if budget < (1 if b is None else 2):
                    raise ValueError(f"max_length={max_length} leaves no room for text: the special tokens alone "
                                     f"need {self.num_special_tokens(b is not None)}")
                if len(a) + len(b or ()) > budget:
                    if not truncation:
                        raise ValueError(f"a text has {len(a) + len(b or ())} tokens, more than the {budget} that "
                                         f"max_length={max_length} allows; pass truncation=True to cut it")
                    a, b = truncate_longest_first(a, b, budget)
            if add_special_tokens:
                ids, type_ids = self.build_pair(a, b)
            else:
                ids, type_ids = list(a) + list(b or ()), [0] * len(a) + [1] * len(b or ())
            rows.append(ids)
            types.append(type_ids)
        length = max_length if padding == "max_length" else max(map(len, rows), default=0)
        pad = self.pad_id if self.pad_id is not None else 0
        input_ids = np.full((len(rows), length), pad, np.int32)
        token_type_ids = np.zeros((len(rows), length), np.int32)
        attention_mask = np.zeros((len(rows), length), np.int32)
        for i, (ids, type_ids) in enumerate(zip(rows, types)):
            place = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, place] = ids
            token_type_ids[i, place] = type_ids
            attention_mask[i, place] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.has_token_types if return_token_type_ids is None else return_token_type_ids:
            batch["token_type_ids"] = token_type_ids
        return batch

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        raise NotImplementedError

    def save(self, folder: PathLike) -> None:
        raise NotImplementedError


def truncate_longest_first(a: Sequence[int], b: Optional[Sequence[int]], budget: int):
    """Removes tokens from the end of the longer segment until both fit `budget` (BERT's "longest_first")."""
    a, b = list(a), (None if b is None else list(b))
    if b is None:
        return a[:budget], None
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


class TranslationTokenizers:
    """A source and a target tokenizer (Marian's `source.spm` and `target.spm`); `encode` is the source's."""

    def __init__(self, source: Tokenizer, target: Tokenizer):
        self.source, self.target = source, target

    def __getattr__(self, name):
        if name in ("source", "target"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.source, name)


def read_vocab_json(vocab_file: PathLike) -> dict[str, int]:
    """token -> id from a `vocab.json` (GPT-2's, Marian's). ValueError names the file when it does not parse or is
    not an object of integer ids."""
    vocab = read_json_object(vocab_file)
    if not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"{vocab_file}: expected a JSON object mapping tokens to integer ids")
    return vocab


def write_tokenizer_config(folder: pathlib.Path, config: dict) -> None:
    """Writes `tokenizer_config.json`, which `from_pretrained` reads back."""
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
