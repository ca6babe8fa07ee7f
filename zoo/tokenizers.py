"""Tokenizers for every zoo family, one small interface over the well-kept libraries.

- WordPiece (BERT `vocab.txt`) and GPT-2's byte-level BPE (`vocab.json` + `merges.txt`), and any `tokenizer.json`,
  run on the `tokenizers` package (the Rust code behind `transformers`' fast tokenizers).
- SentencePiece models (ALBERT's `spiece.model`, Marian's `source.spm`/`target.spm`, or one trained here with
  `train_sentencepiece`) run on `sentencepiece`.

`from_pretrained(folder)` picks the right one from the files in a checkpoint folder. Every tokenizer has:

    encode(text) -> ids                 encode_pair(a, b) -> (ids, token_type_ids)
    encode_plain(texts) -> [ids]        (no special tokens; batched)
    encode_batch(texts, max_length=...) -> {"input_ids", "attention_mask", "token_type_ids" (BERT, ALBERT)}
    decode(ids) -> text                 pad_id, cls_id, sep_id, mask_id, unk_id, bos_id, eos_id, special_ids

The ids equal those of the reference tokenizers in `transformers` (tests/test_tokenizers.py checks Chinese, accents,
emoji and very long words). A file that does not parse is a `ValueError` naming the file and what is wrong with it,
and a missing one a `FileNotFoundError` naming it, before anything runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import unicodedata
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from zoo.files import read_json_object, read_utf8

PathLike = Union[str, os.PathLike]
Text = Union[str, tuple[str, str]]
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")


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


class RustTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (WordPiece, byte-level BPE, or any `tokenizer.json`) behind zoo's interface."""

    def __init__(self, tokenizer, special_tokens: dict[str, str], *, word_prefix: str = "", continuation: str = ""):
        self.tokenizer = tokenizer
        self.special_tokens = {}
        for role, token in special_tokens.items():
            token_id = tokenizer.token_to_id(token) if token else None
            if token_id is not None:
                self.special_tokens[role] = token_id
        self._word_prefix, self._continuation = word_prefix, continuation
        self.prefix, self.middle, self.suffix = self._template()

    def _template(self):
        """Reads the special ids around A and B off the post-processor: ids = prefix A middle B suffix."""
        a, b = self.tokenizer.encode_batch(["a", "b"], add_special_tokens=False)
        ids = self.tokenizer.post_process(a, b, add_special_tokens=True).ids
        a, b = a.ids, b.ids
        for i in range(len(ids) - len(a) + 1):
            if ids[i:i + len(a)] != a:
                continue
            for j in range(i + len(a), len(ids) - len(b) + 1):
                if ids[j:j + len(b)] == b:
                    return tuple(ids[:i]), tuple(ids[i + len(a):j]), tuple(ids[j + len(b):])
        raise ValueError("cannot read the special-token template off this tokenizer's post-processor")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        return self.tokenizer.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> Optional[int]:
        return self.tokenizer.token_to_id(token)

    def _starts_word(self, token: Optional[str]) -> bool:
        if token is None:
            return True
        if self._continuation:
            return not token.startswith(self._continuation)
        return not self._word_prefix or token.startswith(self._word_prefix)

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, folder: PathLike) -> None:
        """Writes `tokenizer.json` and `tokenizer_config.json` (the special tokens), which `from_pretrained` reads."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        config = {f"{role}_token": self.id_to_token(i) for role, i in self.special_tokens.items()}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
GPT2_SPECIALS = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}


def wordpiece(vocab_file: PathLike, *, lower_case: Optional[bool] = None, strip_accents: Optional[bool] = None,
              special_tokens: Optional[dict[str, str]] = None) -> RustTokenizer:
    """BERT's WordPiece from a `vocab.txt`: lower-casing, accent stripping, punctuation split, CJK characters alone.

    `lower_case=None` guesses from the vocabulary (a cased vocabulary has upper-case tokens); accents are stripped
    when lower-casing unless `strip_accents` says otherwise, as in BERT.
    """
    from tokenizers import Tokenizer as RustTok, decoders, models, normalizers, pre_tokenizers, processors

    vocab = read_wordpiece_vocab(vocab_file)
    specials = {**BERT_SPECIALS, **(special_tokens or {})}
    if specials["unk"] not in vocab:
        raise ValueError(f"{vocab_file}: the vocabulary has no unknown token {specials['unk']!r}")
    if lower_case is None:  # a cased vocabulary has many tokens that lower-casing changes (uncased ones hold a few
        changed = sum(t != t.lower() for t in vocab if not t.startswith("["))  # such as "ℝ", which stays "ℝ")
        lower_case = changed <= len(vocab) // 200
    tok = RustTok(models.WordPiece(vocab, unk_token=specials["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([t for t in specials.values() if t in vocab])
    if specials["cls"] in vocab and specials["sep"] in vocab:
        cls, sep = specials["cls"], specials["sep"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return RustTokenizer(tok, specials, continuation="##")


def read_wordpiece_vocab(vocab_file: PathLike) -> dict[str, int]:
    """token -> id from a `vocab.txt` (one token a line). ValueError names the file and line when it does not parse."""
    text = read_utf8(vocab_file)
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab = {}
    for line, token in enumerate(tokens, 1):
        token = token.rstrip("\r")
        if not token.strip():
            raise ValueError(f"{vocab_file}:{line}: empty token in a WordPiece vocabulary")
        if token in vocab:
            raise ValueError(f"{vocab_file}:{line}: token {token!r} appears twice (first on line {vocab[token] + 1})")
        vocab[token] = len(vocab)
    if not vocab:
        raise ValueError(f"{vocab_file}: empty vocabulary")
    return vocab


def byte_level_bpe(vocab_file: PathLike, merges_file: PathLike,
                   special_tokens: Optional[dict[str, str]] = None) -> RustTokenizer:
    """GPT-2's byte-level BPE from `vocab.json` and `merges.txt` (no special tokens added to text, as in GPT-2)."""
    from tokenizers import Tokenizer as RustTok, decoders, models, pre_tokenizers, processors

    vocab = read_vocab_json(vocab_file)
    merges = []
    for line, text in enumerate(read_utf8(merges_file).split("\n"), 1):
        if not text.strip() or (line == 1 and text.startswith("#version")):
            continue
        parts = text.split(" ")
        if len(parts) != 2 or parts[0] + parts[1] not in vocab:
            raise ValueError(f"{merges_file}:{line}: expected two tokens whose merge is in the vocabulary, "
                             f"got {text!r}")
        merges.append((parts[0], parts[1]))
    specials = {**GPT2_SPECIALS, **(special_tokens or {})}
    tok = RustTok(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(sorted({t for t in specials.values() if t in vocab}))
    return RustTokenizer(tok, specials, word_prefix="\u0120")


def read_vocab_json(vocab_file: PathLike) -> dict[str, int]:
    """token -> id from a `vocab.json` (GPT-2's, Marian's). ValueError names the file when it does not parse or is
    not an object of integer ids."""
    vocab = read_json_object(vocab_file)
    if not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"{vocab_file}: expected a JSON object mapping tokens to integer ids")
    return vocab


def from_tokenizer_json(file: PathLike, special_tokens: Optional[dict[str, str]] = None) -> RustTokenizer:
    """Any `tokenizer.json`; special-token roles come from `special_tokens` or are guessed from the added tokens."""
    from tokenizers import Tokenizer as RustTok

    text = read_utf8(file)
    try:
        tok = RustTok.from_str(text)
    except Exception as e:  # the Rust parser raises a plain Exception
        raise ValueError(f"{file}: not a valid tokenizer.json ({e})") from None
    tok.no_truncation()  # encode_batch pads and truncates, to the length each call asks for
    tok.no_padding()
    added = [t.content for t in tok.get_added_tokens_decoder().values()]
    guesses = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>"),
               "sep": ("[SEP]", "</s>"), "mask": ("[MASK]", "<mask>"), "bos": ("<s>", "<|endoftext|>"),
               "eos": ("</s>", "<|endoftext|>")}
    roles = {role: next((t for t in names if t in added), None) for role, names in guesses.items()}
    roles = {r: t for r, t in roles.items() if t}
    roles.update(special_tokens or {})
    model = json.loads(tok.to_str()).get("model", {})
    if model.get("type") == "WordPiece":
        return RustTokenizer(tok, roles, continuation=model.get("continuing_subword_prefix") or "##")
    if model.get("type") == "BPE" and "\u0120" in "".join(list(tok.get_vocab())[:1000]):
        return RustTokenizer(tok, roles, word_prefix="\u0120")
    return RustTokenizer(tok, roles, word_prefix="\u2581")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (`.model`) behind zoo's interface.

    Args:
      model_file: the `.model` file.
      template: "bert" ([CLS] A [SEP] B [SEP], ALBERT), "eos" (A </s> B </s>, T5 and Marian) or "none".
      lower_case, strip_accents: text normalization before SentencePiece (ALBERT lower-cases and strips accents).
      albert_quotes: ALBERT's preprocessing: collapse white space and turn `` and '' into ".
      vocab: optional piece -> id mapping that replaces the model's own ids (Marian's `vocab.json`).
    """

    def __init__(self, model_file: PathLike, *, template: Optional[str] = None, lower_case: bool = False,
                 strip_accents: bool = False, albert_quotes: bool = False, vocab: Optional[dict[str, int]] = None):
        import sentencepiece as spm

        self.model_file = pathlib.Path(model_file)
        if not self.model_file.is_file():  # sentencepiece's own error does not tell a missing file from a bad one
            raise FileNotFoundError(f"{model_file}: no such file (a SentencePiece model)")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.load(str(model_file))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{model_file}: not a SentencePiece model ({e})") from None
        self.lower_case, self.strip_accents, self.albert_quotes = lower_case, strip_accents, albert_quotes
        self._vocab = vocab
        self._id_to_piece = None if vocab is None else {i: p for p, i in vocab.items()}
        pieces = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        self.special_tokens = {}
        for role, getter in (("pad", self.sp.pad_id), ("unk", self.sp.unk_id), ("bos", self.sp.bos_id),
                             ("eos", self.sp.eos_id)):
            if getter() >= 0:
                self.special_tokens[role] = self._map(getter())
        for role, names in (("cls", ("[CLS]",)), ("sep", ("[SEP]",)), ("mask", ("[MASK]", "<mask>")),
                            ("pad", ("<pad>", "[PAD]")), ("eos", ("</s>",))):
            found = next((pieces[n] for n in names if n in pieces), None)
            if found is not None and role not in self.special_tokens:
                self.special_tokens[role] = self._map(found)
        if vocab is not None:  # Marian: the roles are the vocabulary's, not the SentencePiece model's
            names = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"}
            self.special_tokens = {role: vocab[name] for role, name in names.items() if name in vocab}
        if template is None:
            template = "bert" if "cls" in self.special_tokens and "sep" in self.special_tokens else (
                "eos" if "eos" in self.special_tokens else "none")
        if template == "bert":
            cls, sep = self.special_tokens["cls"], self.special_tokens["sep"]
            self.prefix, self.middle, self.suffix = (cls,), (sep,), (sep,)
        elif template == "eos":
            if "eos" not in self.special_tokens:
                raise ValueError(f"{model_file}: template 'eos' needs an EOS piece (</s>), and the model has none")
            eos = self.special_tokens["eos"]
            self.prefix, self.middle, self.suffix = (), (eos,), (eos,)
        elif template != "none":
            raise ValueError(f"template must be 'bert', 'eos' or 'none', got {template!r}")
        self.template = template
        self._control = {i for i in range(self.sp.get_piece_size()) if self.sp.is_control(i) or self.sp.is_unknown(i)}

    def _map(self, sp_id: int) -> int:
        if self._vocab is None:
            return sp_id
        piece = self.sp.id_to_piece(sp_id)
        return self._vocab.get(piece, self._vocab.get("<unk>", 0))

    @property
    def special_ids(self) -> frozenset[int]:
        return super().special_ids | frozenset(self._map(i) for i in self._control)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab) if self._vocab is not None else self.sp.get_piece_size()

    def id_to_token(self, token_id: int) -> str:
        if self._id_to_piece is not None:
            return self._id_to_piece.get(int(token_id), "<unk>")
        return self.sp.id_to_piece(int(token_id))

    def token_to_id(self, token: str) -> Optional[int]:
        if self._vocab is not None:
            return self._vocab.get(token)
        token_id = self.sp.piece_to_id(token)
        return None if token_id == self.sp.unk_id() and token != self.sp.id_to_piece(token_id) else token_id

    def _starts_word(self, token: str) -> bool:
        return token.startswith("\u2581")

    def normalize(self, text: str) -> str:
        """ALBERT's preprocessing before SentencePiece: quotes, collapsed spaces, accents, case."""
        if self.albert_quotes:
            text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        return text.lower() if self.lower_case else text

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        # Special tokens written in the text ("[MASK]") are matched before normalization, as `transformers` does.
        specials = [self.id_to_token(i) for i in sorted(self.special_tokens.values())]
        pattern = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")") if specials else None
        out = []
        for text in texts:
            parts = pattern.split(text) if pattern else [text]
            ids = []
            for k, part in enumerate(parts):
                if k % 2:
                    ids.append(self.token_to_id(part))
                elif part.strip():
                    ids += [self._map(i) for i in self.sp.encode(self.normalize(part), out_type=int)]
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        if self._id_to_piece is not None:
            return self.sp.decode_pieces([self._id_to_piece.get(i, "<unk>") for i in ids])
        return self.sp.decode(ids)

    def save(self, folder: PathLike) -> None:
        """Copies the model as `spiece.model` with a `tokenizer_config.json` that keeps the normalization."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spiece.model").write_bytes(self.model_file.read_bytes())
        config = {"do_lower_case": self.lower_case, "strip_accents": self.strip_accents, "template": self.template,
                  "albert_quotes": self.albert_quotes}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def train_sentencepiece(texts: Iterable[str], model_prefix: PathLike, *, vocab_size: int = 4000,
                        model_type: str = "unigram", user_defined_symbols: Sequence[str] = ("[CLS]", "[SEP]", "[MASK]"),
                        lower_case: bool = False, input_sentence_size: int = 1_000_000,
                        **options) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on `texts` (one sentence each); writes `{model_prefix}.model` and `.vocab`.

    Ids: 0 <pad>, 1 <unk>, then `user_defined_symbols` ([CLS], [SEP], [MASK] as in ALBERT), then the pieces. Extra
    keyword `options` go to `SentencePieceTrainer.train`. Deterministic for the same text and options.
    """
    import sentencepiece as spm

    texts = [t.lower() if lower_case else t for t in texts if t.strip()]
    if not texts:
        raise ValueError("train_sentencepiece got no text")
    model_prefix = pathlib.Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(model_prefix), vocab_size=vocab_size, model_type=model_type,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, user_defined_symbols=list(user_defined_symbols),
        input_sentence_size=input_sentence_size, shuffle_input_sentence=False, num_threads=1,
        minloglevel=2, **options)
    return SentencePieceTokenizer(f"{model_prefix}.model", lower_case=lower_case)


def _read_config(folder: pathlib.Path) -> dict:
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).exists():
            config.update(read_json_object(folder / name))
    return config


def _special_tokens_from_config(config: dict) -> dict[str, str]:
    roles = {}
    for role in ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            roles[role] = value
    return roles


class TranslationTokenizers:
    """A source and a target tokenizer (Marian's `source.spm` and `target.spm`); `encode` is the source's."""

    def __init__(self, source: Tokenizer, target: Tokenizer):
        self.source, self.target = source, target

    def __getattr__(self, name):
        if name in ("source", "target"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.source, name)


def from_pretrained(folder: PathLike) -> Union[Tokenizer, TranslationTokenizers]:
    """The tokenizer of a checkpoint folder, picked from the files in it:

    `source.spm` + `target.spm` (Marian) > `tokenizer.json` > `vocab.json` + `merges.txt` (GPT-2) > `vocab.txt`
    (BERT WordPiece) > `spiece.model` or another single `*.model` (SentencePiece; ALBERT's when it has [CLS]).
    `tokenizer_config.json` / `special_tokens_map.json` give special tokens and `do_lower_case` when present.

    Raises:
      FileNotFoundError: no tokenizer file in the folder. ValueError: a file that does not parse.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    config = _read_config(folder)
    specials = _special_tokens_from_config(config)
    has = lambda name: (folder / name).is_file()  # noqa: E731
    if has("source.spm") and has("target.spm"):
        vocab = read_vocab_json(folder / "vocab.json") if has("vocab.json") else None
        return TranslationTokenizers(SentencePieceTokenizer(folder / "source.spm", vocab=vocab),
                                     SentencePieceTokenizer(folder / "target.spm", vocab=vocab))
    if has("tokenizer.json"):
        return from_tokenizer_json(folder / "tokenizer.json", specials)
    if has("vocab.json") and has("merges.txt"):
        return byte_level_bpe(folder / "vocab.json", folder / "merges.txt", specials or None)
    if has("vocab.txt"):
        return wordpiece(folder / "vocab.txt", lower_case=config.get("do_lower_case"),
                         strip_accents=config.get("strip_accents"), special_tokens=specials or None)
    models = [folder / "spiece.model"] if has("spiece.model") else sorted(folder.glob("*.model"))
    if len(models) == 1:
        albert_like = config.get("do_lower_case", None)
        sp = SentencePieceTokenizer(models[0], template=config.get("template"))
        lower = albert_like if albert_like is not None else sp.template == "bert"
        strip = config.get("strip_accents", not config.get("keep_accents", False) and sp.template == "bert")
        return SentencePieceTokenizer(models[0], template=sp.template, lower_case=bool(lower),
                                      strip_accents=bool(strip),
                                      albert_quotes=config.get("albert_quotes", sp.template == "bert"))
    found = sorted(p.name for p in folder.iterdir())
    raise FileNotFoundError(f"no tokenizer in {folder}: expected one of source.spm+target.spm, tokenizer.json, "
                            f"vocab.json+merges.txt, vocab.txt, spiece.model (found {found})")
