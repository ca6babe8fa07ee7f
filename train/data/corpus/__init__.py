"""The corpus, vocabulary and translation task that ship with zoo, so demos and tests run offline.

- `python_docs.txt.xz`: 1.9 MB of English prose (491 documents, about 23k sentences) from the Python standard
  library's docstrings and `pydoc_data.topics`, Python Software Foundation License (redistribution allowed). Rebuilt
  by `build_corpus.py`. One sentence per line, a blank line between documents (the BERT reference format).
- `vocab.txt`: a lower-cased WordPiece vocabulary of 1024 tokens trained on that corpus, the size of the `*-tiny`
  presets. [PAD]=0 and [SEP]=1, so `gpt-tiny`'s eos (1) and `transformer-tiny`'s pad/eos/start (0/1/0) match it.
- `vocab_4096.txt`: one of 4096 tokens trained the same way, the demo's (configs/bert_tiny.py): it keeps most words
  whole (1.45 tokens a word, against 1.96 with 1024), so a row of 128 tokens holds a third more text. Same special
  tokens at the same ids.
- `date_translation_pairs`: a generated translation task (dates written out in words -> ISO dates) for the
  encoder-decoder.
- `word_order_records`: a generated sentence-classification task from the corpus (is the word order as written, or
  were two words swapped?) for fine-tuning offline.
- `code_spans_records`: a tagging task from the corpus (which words are code?), BIO-tagged as NER is, for token
  classification offline.
- `far_key_records`: a generated long-input classification task (which class are the key words, far from [CLS]
  among hundreds of filler words?) for comparing attention patterns on long rows.
"""

from __future__ import annotations

import datetime
import pathlib
import re
from typing import Iterable

import numpy as np

HERE = pathlib.Path(__file__).parent
CORPUS_FILE = HERE / "python_docs.txt.xz"
VOCAB_FILE = HERE / "vocab.txt"
VOCAB_4096_FILE = HERE / "vocab_4096.txt"
# `data.tokenizer` names of the shipped vocabularies
SHIPPED_VOCABULARIES = {"shipped": VOCAB_FILE, "shipped-4096": VOCAB_4096_FILE}
SPECIAL_TOKENS = ("[PAD]", "[SEP]", "[UNK]", "[CLS]", "[MASK]")


def read_corpus_text() -> str:
    """The shipped corpus, decompressed. Raises ValueError naming the file when it is corrupt or truncated."""
    from train.data.sources import read_text

    return read_text(CORPUS_FILE)


def shipped_documents() -> list[list[str]]:
    """The shipped corpus as documents, each a list of sentences."""
    from train.data.sources import parse_documents

    return parse_documents(read_corpus_text())


def shipped_tokenizer(extra_ids: int = 0, name: str = "shipped"):
    """The lower-cased WordPiece tokenizer over a shipped vocabulary (`SHIPPED_VOCABULARIES`: "shipped" is the
    1024-token `vocab.txt`, "shipped-4096" `vocab_4096.txt`); `extra_ids` appends T5's sentinels <extra_id_0..
    extra_ids-1> (ids from the vocabulary's size on, <extra_id_0> last) for span corruption."""
    from zoo.tokenizers import wordpiece

    return wordpiece(SHIPPED_VOCABULARIES[name], lower_case=True, extra_ids=extra_ids)


def train_wordpiece_vocab(lines: Iterable[str], vocab_file, vocab_size: int = 1024) -> None:
    """Trains a lower-cased BERT WordPiece vocabulary with the `tokenizers` package and writes `vocab.txt`."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator([line for line in lines if line.strip()], vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=list(SPECIAL_TOKENS), limit_alphabet=200, show_progress=False)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    pathlib.Path(vocab_file).write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
            "eighteenth", "nineteenth", "twentieth", "twenty first", "twenty second", "twenty third",
            "twenty fourth", "twenty fifth", "twenty sixth", "twenty seventh", "twenty eighth", "twenty ninth",
            "thirtieth", "thirty first")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def date_translation_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """A generated translation task: a date in one of several English phrasings -> the ISO date.

    e.g. ("saturday, the fourth of july 1998", "1998-07-04"). Deterministic for a seed; dates 1900-2099.
    """
    rng = np.random.default_rng(seed)
    start = datetime.date(1900, 1, 1).toordinal()
    days = rng.integers(0, datetime.date(2099, 12, 31).toordinal() - start + 1, count)
    styles = rng.integers(0, 4, count)
    pairs = []
    for day, style in zip(days, styles):
        date = datetime.date.fromordinal(start + int(day))
        month, ordinal = MONTHS[date.month - 1], ORDINALS[date.day - 1]
        source = (f"{WEEKDAYS[date.weekday()]}, the {ordinal} of {month} {date.year}",
                  f"{month} {date.day}, {date.year}",
                  f"the {ordinal} of {month}, {date.year}",
                  f"{date.day} {month} {date.year}")[style]
        pairs.append((source, date.isoformat()))
    return pairs


def corpus_split(split: str, eval_fraction: float = 0.05) -> list[str]:
    """The sentences of the shipped corpus in `split`: "train" those of the first `1 - eval_fraction` of the
    documents, "validation" those of the rest less the sentences that the training documents also hold (the corpus
    repeats a few), so no sentence is in both. Raises ValueError for another split."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    documents = shipped_documents()
    first_held_out = len(documents) - int(len(documents) * eval_fraction)
    training = [s for document in documents[:first_held_out] for s in document]
    if split == "train":
        return training
    seen_in_training = set(training)
    return [s for document in documents[first_held_out:] for s in document if s not in seen_in_training]


def word_order_records(split: str = "train", seed: int = 0, eval_fraction: float = 0.05) -> list[tuple[str, int]]:
    """A generated acceptability task from the shipped corpus, in the spirit of GLUE's CoLA (Warstadt et al. 2019):
    (sentence, 1) for a sentence as written, (sentence, 0) for one with two different words swapped; about half of
    each, every sentence of 6 to 40 words used once.

    `split` "train" or "validation" (`corpus_split`: no sentence is in both). Deterministic for a seed. Raises
    ValueError for another split.
    """
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    records = []
    for sentence in corpus_split(split, eval_fraction):
        words = sentence.split()
        if not 6 <= len(words) <= 40:
            continue
        if rng.random() < 0.5:
            records.append((sentence, 1))
            continue
        first, second = rng.choice(len(words), 2, replace=False)
        if words[first].lower() == words[second].lower():  # swapping equal words leaves the sentence as written
            records.append((sentence, 1))
            continue
        words[first], words[second] = words[second], words[first]
        records.append((" ".join(words), 0))
    return records


CODE_SPANS_LABELS = ("O", "B-CODE", "I-CODE")  # the tag names of `code_spans_records`, by tag id
# A word that is code: an identifier with an underscore (`__init__`, `max_length`), a call or subscript (`len()`,
# `sys.argv[1]`), an assignment (`key=None`) or a dotted name (`os.path`; two letters after the dot, so "e.g." is not)
CODE_WORD = re.compile(r"\w_|_\w|\w[(\[]|\w=|=\w|[A-Za-z]\.[A-Za-z_]{2}")


def code_span_tags(words: list[str]) -> list[int]:
    """The tag ids (`CODE_SPANS_LABELS`) of a sentence's words: each run of code words is one entity, B-CODE on its
    first word and I-CODE on the rest; prose is O."""
    is_code = [bool(CODE_WORD.search(word)) for word in words]
    return [0 if not code else 2 if k and is_code[k - 1] else 1 for k, code in enumerate(is_code)]


def code_spans_records(split: str = "train", eval_fraction: float = 0.05) -> list[tuple[list[str], list[int]]]:
    """A tagging task from the shipped corpus: find the code in the prose, as NER on software text finds code
    mentions (Tabassum et al. 2020, "Code and Named Entity Recognition in StackOverflow").

    Each sentence of 6 to 40 words (split at white space) becomes (words, `code_span_tags(words)`): a run of code
    words (`CODE_WORD`: `os.path.join(a,`, `__init__`, `key=None`) is one entity, B-CODE I-CODE ..., the rest O;
    a quarter to a third of the sentences hold one or more. It is a BIO entity task as CoNLL's NER is (seqeval counts
    an entity only when its extent is exact), from a rule on the words, so it is learnt fast: a tiny BERT trained
    from scratch reaches an entity F1 of about 0.45 in 400 steps of 32 sentences (configs/bert_tagging_code_spans.py).
    A test of the tagging pipeline that runs offline, not a benchmark.

    `split` "train" or "validation" (`corpus_split`: no sentence is in both). Raises ValueError for another split.
    """
    records = []
    for sentence in corpus_split(split, eval_fraction):
        words = sentence.split()
        if 6 <= len(words) <= 40:
            records.append((words, code_span_tags(words)))
    return records


# `far_key_records`: the key words of each class (single tokens of vocab.txt), and the filler: every other lower-case
# whole word of four letters or more in vocab.txt
FAR_KEY_WORDS = (("string", "file", "list", "path"), ("number", "line", "module", "command"))


def far_key_filler() -> tuple[str, ...]:
    """The filler words of `far_key_records`: vocab.txt's whole words of 4+ lower-case letters, less the key words."""
    keys = {word for words in FAR_KEY_WORDS for word in words}
    vocab = VOCAB_FILE.read_text(encoding="utf-8").split()
    return tuple(word for word in vocab if re.fullmatch(r"[a-z]{4,}", word) and word not in keys)


def far_key_records(count: int, seed: int = 0, num_words: int = 510, num_keys: int = 8) -> list[tuple[str, int]]:
    """A generated long-input classification task: `num_words` words, all filler (`far_key_filler`, drawn uniformly)
    but `num_keys` key words of one class of `FAR_KEY_WORDS` at distinct uniform positions in the second half; the
    label is that class. (With one key word among 254 a tiny BERT stayed at chance for 200 steps; with four, one in 64
    words, it learned the task in about a hundred, and with four among 510 it was just breaking away at step 200.)

    Every word is one token of the shipped vocabulary, so with [CLS] and [SEP] a row is num_words + 2 tokens, and the
    keys lie at least num_words / 2 tokens from [CLS], which pools the row: dense attention reaches them in one layer; a
    sliding window of w tokens reaches only w per layer from [CLS], so it needs a global [CLS] (or depth); BigBird's
    blocks reach them through random blocks or the global tokens. Labels alternate (exactly half of each class for an
    even count). Deterministic for a seed.
    """
    rng = np.random.default_rng([seed, num_words])
    filler = np.asarray(far_key_filler())
    records = []
    for index in range(count):
        label = index % 2
        words = filler[rng.integers(0, len(filler), num_words)].tolist()
        places = rng.choice(np.arange(num_words // 2, num_words), num_keys, replace=False)
        for place in places:
            words[place] = FAR_KEY_WORDS[label][rng.integers(len(FAR_KEY_WORDS[label]))]
        records.append((" ".join(words), label))
    return records
