"""Tokenizers that run on the `tokenizers` package (the Rust code behind `transformers`' fast tokenizers): BERT's
WordPiece (`vocab.txt`), the byte-level BPE of GPT-2 and of RoBERTa (`vocab.json` + `merges.txt`), and any
`tokenizer.json`."""

from __future__ import annotations

import pathlib
from typing import Iterable, Optional, Sequence

from zoo.files import read_utf8
from zoo.tokenizers.interface import PathLike, Tokenizer, read_vocab_json, write_tokenizer_config

BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
GPT2_SPECIALS = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}
# roberta-base's ids: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> the last
ROBERTA_SPECIALS = {"bos": "<s>", "eos": "</s>", "cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>",
                    "mask": "<mask>"}
BYTE_LEVEL_WORD_START = "\u0120"  # "Ġ": the byte-level alphabet's space, which starts a word's first token


class RustTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (WordPiece, byte-level BPE, or any `tokenizer.json`) behind zoo's interface.

    The special-token template is read off the tokenizer's post-processor; so is whether its models take token type
    ids (a template that starts with a prefix and gives segment B type 1, as BERT's [CLS] A [SEP] B:1 [SEP]:1 does;
    RoBERTa's <s> A </s></s> B </s> types everything 0).
    """

    def __init__(self, tokenizer, special_tokens: dict[str, str], *, word_prefix: str = "", continuation: str = ""):
        self.tokenizer = tokenizer
        self.special_tokens = {}
        for role, token in special_tokens.items():
            token_id = tokenizer.token_to_id(token) if token else None
            if token_id is not None:
                self.special_tokens[role] = token_id
        self._word_prefix, self._continuation = word_prefix, continuation
        (self.prefix, self.middle, self.suffix), self._types_segment_b = self._template()

    def _template(self):
        """-> ((prefix, middle, suffix), whether B is type 1): ids = prefix A middle B suffix by the post-processor."""
        a, b = self.tokenizer.encode_batch(["a", "b"], add_special_tokens=False)
        pair = self.tokenizer.post_process(a, b, add_special_tokens=True)
        ids, a, b = pair.ids, a.ids, b.ids
        for i in range(len(ids) - len(a) + 1):
            if ids[i:i + len(a)] != a:
                continue
            for j in range(i + len(a), len(ids) - len(b) + 1):
                if ids[j:j + len(b)] == b:
                    template = tuple(ids[:i]), tuple(ids[i + len(a):j]), tuple(ids[j + len(b):])
                    return template, any(pair.type_ids[j:j + len(b)])
        raise ValueError("cannot read the special-token template off this tokenizer's post-processor")

    @property
    def has_token_types(self) -> bool:
        """Whether the models take `token_type_ids`: the template has a prefix and types segment B 1 (BERT)."""
        return bool(self.prefix) and self._types_segment_b

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
        write_tokenizer_config(folder, {f"{role}_token": self.id_to_token(i) for role, i in self.special_tokens.items()})


def wordpiece(vocab_file: PathLike, *, lower_case: Optional[bool] = None, strip_accents: Optional[bool] = None,
              special_tokens: Optional[dict[str, str]] = None, extra_ids: int = 0) -> RustTokenizer:
    """BERT's WordPiece from a `vocab.txt`: lower-casing, accent stripping, punctuation split, CJK characters alone.

    `lower_case=None` guesses from the vocabulary (a cased vocabulary has upper-case tokens); accents are stripped
    when lower-casing unless `strip_accents` says otherwise, as in BERT. `extra_ids` appends T5's sentinels
    <extra_id_0> ... <extra_id_{extra_ids - 1}> as special tokens after the vocabulary, <extra_id_0> last as in T5's
    (for span corruption with a vocabulary that has none).
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
    sentinels = [f"<extra_id_{n}>" for n in reversed(range(extra_ids))]
    if set(sentinels) & set(vocab):
        raise ValueError(f"{vocab_file}: the vocabulary already holds sentinels <extra_id_N>; pass extra_ids=0")
    tok.add_special_tokens(sentinels)
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


def read_bpe_merges(merges_file: PathLike, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """The merges of a `merges.txt` (one pair a line after an optional `#version` line). ValueError names the file
    and line of a pair that is not two tokens whose merge is in `vocab`."""
    merges = []
    for line, text in enumerate(read_utf8(merges_file).split("\n"), 1):
        if not text.strip() or (line == 1 and text.startswith("#version")):
            continue
        parts = text.split(" ")
        if len(parts) != 2 or parts[0] + parts[1] not in vocab:
            raise ValueError(f"{merges_file}:{line}: expected two tokens whose merge is in the vocabulary, "
                             f"got {text!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _byte_level_bpe_model(vocab_file: PathLike, merges_file: PathLike):
    """-> (a `tokenizers.Tokenizer` of GPT-2's byte-level BPE without a post-processor, its vocabulary)."""
    from tokenizers import Tokenizer as RustTok, decoders, models, pre_tokenizers

    vocab = read_vocab_json(vocab_file)
    tok = RustTok(models.BPE(vocab, read_bpe_merges(merges_file, vocab)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, vocab


def byte_level_bpe(vocab_file: PathLike, merges_file: PathLike,
                   special_tokens: Optional[dict[str, str]] = None) -> RustTokenizer:
    """GPT-2's byte-level BPE from `vocab.json` and `merges.txt` (no special tokens added to text, as in GPT-2)."""
    from tokenizers import processors

    tok, vocab = _byte_level_bpe_model(vocab_file, merges_file)
    specials = {**GPT2_SPECIALS, **(special_tokens or {})}
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(sorted({t for t in specials.values() if t in vocab}))
    return RustTokenizer(tok, specials, word_prefix=BYTE_LEVEL_WORD_START)


def roberta_byte_level_bpe(vocab_file: PathLike, merges_file: PathLike,
                           special_tokens: Optional[dict[str, str]] = None) -> RustTokenizer:
    """RoBERTa's tokenizer: GPT-2's byte-level BPE with the template <s> A </s> and <s> A </s></s> B </s>, and no
    token type ids. `special_tokens` (role -> token) replaces `ROBERTA_SPECIALS`' tokens.

    Raises ValueError naming `vocab_file` when the vocabulary lacks the cls or sep token that the template needs.
    """
    from tokenizers import AddedToken, processors

    tok, vocab = _byte_level_bpe_model(vocab_file, merges_file)
    specials = {**ROBERTA_SPECIALS, **(special_tokens or {})}
    for role in ("cls", "sep"):
        if specials[role] not in vocab:
            raise ValueError(f"{vocab_file}: RoBERTa's template needs the {role} token {specials[role]!r}, and the "
                             f"vocabulary has none")
    cls, sep = specials["cls"], specials["sep"]
    tok.post_processor = processors.RobertaProcessing((sep, vocab[sep]), (cls, vocab[cls]), trim_offsets=True,
                                                      add_prefix_space=False)
    # <mask> takes the space before it, as roberta-base's tokenizer.json says: the model saw " word" masked whole.
    tokens = sorted({t for t in specials.values() if t in vocab})
    tok.add_special_tokens([AddedToken(t, lstrip=t == specials["mask"], special=True) for t in tokens])
    return RustTokenizer(tok, specials, word_prefix=BYTE_LEVEL_WORD_START)


# role -> the added tokens that play it, for a tokenizer.json whose folder names no special tokens
TOKENIZER_JSON_ROLE_GUESSES = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>"),
                               "sep": ("[SEP]", "</s>"), "mask": ("[MASK]", "<mask>"),
                               "bos": ("<s>", "<|endoftext|>"), "eos": ("</s>", "<|endoftext|>")}


def from_tokenizer_json(file: PathLike, special_tokens: Optional[dict[str, Optional[str]]] = None) -> RustTokenizer:
    """Any `tokenizer.json`; its post-processor says which special tokens a text gets (Llama 2's `<s> A`, Llama 3's
    `<|begin_of_text|> A`, Qwen2's nothing): tokenizer_config.json's `add_bos_token` / `add_eos_token` do not change
    it, as in `transformers` 5, which drops those keys when a folder has a tokenizer.json.

    Special-token roles: when `special_tokens` (role -> token, as a tokenizer_config.json names them) names any
    role, it alone gives them, and a role it leaves out or sets to None has no token (Llama has no pad, Qwen2 no
    bos, as `transformers` reads those configs); with none named they are guessed from the added tokens.

    Raises FileNotFoundError naming a missing file; ValueError naming one that is not UTF-8 or not a tokenizer.json.
    """
    from tokenizers import Tokenizer as RustTok, models

    text = read_utf8(file)
    try:
        tok = RustTok.from_str(text)
    except Exception as e:  # the Rust parser raises a plain Exception
        raise ValueError(f"{file}: not a valid tokenizer.json ({e})") from None
    tok.no_truncation()  # encode_batch pads and truncates, to the length each call asks for
    tok.no_padding()
    roles = {r: t for r, t in (special_tokens or {}).items() if t}
    if not special_tokens:
        added = [t.content for t in tok.get_added_tokens_decoder().values()]
        guesses = {role: next((t for t in names if t in added), None)
                   for role, names in TOKENIZER_JSON_ROLE_GUESSES.items()}
        roles = {r: t for r, t in guesses.items() if t}
    if isinstance(tok.model, models.WordPiece):
        return RustTokenizer(tok, roles, continuation=tok.model.continuing_subword_prefix or "##")
    if isinstance(tok.model, models.BPE) and BYTE_LEVEL_WORD_START in "".join(list(tok.get_vocab())[:1000]):
        return RustTokenizer(tok, roles, word_prefix=BYTE_LEVEL_WORD_START)
    return RustTokenizer(tok, roles, word_prefix="\u2581")
