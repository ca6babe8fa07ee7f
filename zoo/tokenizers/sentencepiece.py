"""Tokenizers that run on `sentencepiece`: ALBERT's and T5's `spiece.model`, Marian's `source.spm`/`target.spm`
pair, or a model trained here with `train_sentencepiece`."""

from __future__ import annotations

import pathlib
import re
import unicodedata
from typing import Iterable, Optional, Sequence

from zoo.tokenizers.interface import (PathLike, Tokenizer, TranslationTokenizers, read_vocab_json,
                                      write_tokenizer_config)

# Marian's roles are tokens of its vocab.json, whose ids both SentencePiece models share (their own ids differ)
MARIAN_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"}
SENTINEL = re.compile(r"<extra_id_(\d+)>")  # T5's span-corruption sentinels


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (`.model`) behind zoo's interface.

    Args:
      model_file: the `.model` file.
      template: "bert" ([CLS] A [SEP] B [SEP], ALBERT), "eos" (A </s> B </s>, T5 and Marian) or "none".
      lower_case, strip_accents: text normalization before SentencePiece (ALBERT lower-cases and strips accents).
      albert_quotes: ALBERT's preprocessing: collapse white space and turn `` and '' into ".
      vocab: optional piece -> id mapping that replaces the model's own ids (Marian's `vocab.json`).
      extra_ids: T5's sentinels <extra_id_0> ... <extra_id_{n-1}>, ids after the model's pieces counted from the end
        of the vocabulary (<extra_id_0> is the last id), as transformers' T5Tokenizer numbers them.
      special_tokens: optional role -> piece; without it the roles are the model's (its pad, unk, bos and eos ids,
        and the pieces [CLS], [SEP], [MASK] or <mask>, <pad> or [PAD], </s>). A piece that is not in the
        vocabulary has no role.
    Raises:
      FileNotFoundError: no `model_file`. ValueError: it is not a SentencePiece model, or `template` is unknown or
        needs a token that the vocabulary lacks.
    """

    def __init__(self, model_file: PathLike, *, template: Optional[str] = None, lower_case: bool = False,
                 strip_accents: bool = False, albert_quotes: bool = False, vocab: Optional[dict[str, int]] = None,
                 special_tokens: Optional[dict[str, str]] = None, extra_ids: int = 0):
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
        self.extra_ids = extra_ids
        self._pieces = len(vocab) if vocab is not None else self.sp.get_piece_size()  # ids below the sentinels
        self._id_to_piece = None if vocab is None else {i: p for p, i in vocab.items()}
        if special_tokens is None:
            self.special_tokens = self._roles_of_the_model()
        else:
            ids = {role: self.token_to_id(piece) for role, piece in special_tokens.items()}
            self.special_tokens = {role: i for role, i in ids.items() if i is not None}
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

    def _roles_of_the_model(self) -> dict[str, int]:
        """role -> id: the model's own pad, unk, bos and eos ids, then the pieces that name the other roles."""
        pieces = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        roles = {}
        for role, getter in (("pad", self.sp.pad_id), ("unk", self.sp.unk_id), ("bos", self.sp.bos_id),
                             ("eos", self.sp.eos_id)):
            if getter() >= 0:
                roles[role] = self._map(getter())
        for role, names in (("cls", ("[CLS]",)), ("sep", ("[SEP]",)), ("mask", ("[MASK]", "<mask>")),
                            ("pad", ("<pad>", "[PAD]")), ("eos", ("</s>",))):
            found = next((pieces[n] for n in names if n in pieces), None)
            if found is not None and role not in roles:
                roles[role] = self._map(found)
        return roles

    def _map(self, sp_id: int) -> int:
        if self._vocab is None:
            return sp_id
        piece = self.sp.id_to_piece(sp_id)
        return self._vocab.get(piece, self._vocab.get("<unk>", 0))

    @property
    def special_ids(self) -> frozenset[int]:
        sentinels = frozenset(range(self._pieces, self._pieces + self.extra_ids))
        return super().special_ids | frozenset(self._map(i) for i in self._control) | sentinels

    @property
    def vocab_size(self) -> int:
        return self._pieces + self.extra_ids

    def id_to_token(self, token_id: int) -> str:
        if self._pieces <= token_id < self.vocab_size:
            return f"<extra_id_{self.vocab_size - 1 - int(token_id)}>"
        if self._id_to_piece is not None:
            return self._id_to_piece.get(int(token_id), "<unk>")
        return self.sp.id_to_piece(int(token_id))

    def token_to_id(self, token: str) -> Optional[int]:
        sentinel = SENTINEL.fullmatch(token)
        if sentinel and int(sentinel.group(1)) < self.extra_ids:
            return self.vocab_size - 1 - int(sentinel.group(1))
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
        specials += [f"<extra_id_{n}>" for n in range(self.extra_ids)]
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
        runs, run = [], []  # sentinels are no pieces of the model: decode the runs between them
        for i in ids:
            if self._pieces <= i < self.vocab_size:
                runs += [self._decode_pieces(run), self.id_to_token(i)] if run else [self.id_to_token(i)]
                run = []
            else:
                run.append(i)
        return " ".join(text for text in runs + ([self._decode_pieces(run)] if run else []) if text)

    def _decode_pieces(self, ids: list[int]) -> str:
        if self._id_to_piece is not None:
            return self.sp.decode_pieces([self._id_to_piece.get(i, "<unk>") for i in ids])
        return self.sp.decode(ids)

    def save(self, folder: PathLike) -> None:
        """Copies the model as `spiece.model` with a `tokenizer_config.json` that keeps the normalization."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spiece.model").write_bytes(self.model_file.read_bytes())
        write_tokenizer_config(folder, {"do_lower_case": self.lower_case, "strip_accents": self.strip_accents,
                                        "template": self.template, "albert_quotes": self.albert_quotes,
                                        "extra_ids": self.extra_ids})


def train_sentencepiece(texts: Iterable[str], model_prefix: PathLike, *, vocab_size: int = 4000,
                        model_type: str = "unigram", user_defined_symbols: Sequence[str] = ("[CLS]", "[SEP]", "[MASK]"),
                        lower_case: bool = False, input_sentence_size: int = 1_000_000, unk_id: int = 1,
                        eos_id: int = -1, **options) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on `texts` (one sentence each); writes `{model_prefix}.model` and `.vocab`.

    Ids: 0 <pad>, 1 <unk>, then `user_defined_symbols` ([CLS], [SEP], [MASK] as in ALBERT), then the pieces; T5's
    layout is `unk_id=2, eos_id=1, user_defined_symbols=()` (0 <pad>, 1 </s>, 2 <unk>). Extra
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
        pad_id=0, unk_id=unk_id, bos_id=-1, eos_id=eos_id, user_defined_symbols=list(user_defined_symbols),
        input_sentence_size=input_sentence_size, shuffle_input_sentence=False, num_threads=1,
        minloglevel=2, **options)
    return SentencePieceTokenizer(f"{model_prefix}.model", lower_case=lower_case)


def marian(source_model: PathLike, target_model: PathLike,
           vocab_file: Optional[PathLike] = None) -> TranslationTokenizers:
    """Marian's (OPUS-MT's) tokenizers: `source.spm` cuts the source text, `target.spm` the target, and both take
    their ids and special tokens (`MARIAN_SPECIALS`; A </s> as the template) from the shared `vocab.json`. Without
    a `vocab_file`, the SentencePiece models' own ids and roles.

    Raises FileNotFoundError naming a missing file; ValueError naming one that does not parse (`vocab_file` first).
    """
    vocab = None if vocab_file is None else read_vocab_json(vocab_file)
    specials = None if vocab is None else MARIAN_SPECIALS
    return TranslationTokenizers(SentencePieceTokenizer(source_model, vocab=vocab, special_tokens=specials),
                                 SentencePieceTokenizer(target_model, vocab=vocab, special_tokens=specials))
