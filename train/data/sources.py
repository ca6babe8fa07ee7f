"""Where documents come from: the shipped corpus, plain text files, JSONL, and tensorflow-datasets.

A document is a list of sentences (strings). A source is anything with `len()` and `[index]` returning a document,
so the loader can visit documents in a seeded order and resume anywhere: a Python list, `TextDocuments`, or
`TfdsDocuments` (random access into prepared array_record data, without TensorFlow).

Bad input fails before training: an empty corpus (naming the files read), a file that is not UTF-8 (naming the file,
byte offset and line), a JSONL line that is not JSON or has no text (file and line) and a corrupt or truncated `.xz`
or `.gz` file are `ValueError`s; a missing file is a `FileNotFoundError` naming it. `on_decode_error="skip"` skips a
file that is not UTF-8 with a warning instead.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import pathlib
import re
import zlib
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

from zoo.files import decode_utf8, parse_json

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
Document = list[str]
SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")
COMPRESSED = {".xz": ("xz", lzma.open), ".gz": ("gzip", gzip.open)}  # suffix -> (format, opener)


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: split at line breaks and after ., ! or ? followed by white space."""
    sentences = []
    for line in text.splitlines():
        sentences += [s.strip() for s in SENTENCE_END.split(line) if s.strip()]
    return sentences


def parse_documents(text: str) -> list[Document]:
    """BERT's pre-training text format: one sentence per line, a blank line between documents."""
    documents = []
    for block in re.split(r"\n[ \t\r]*\n", text):
        sentences = [line.strip() for line in block.splitlines() if line.strip()]
        if sentences:
            documents.append(sentences)
    return documents


def check_not_empty(documents: Sequence, name: str) -> None:
    if len(documents) == 0:
        raise ValueError(f"{name} holds no documents: nothing to train on")


def read_file_bytes(path: PathLike) -> bytes:
    """The bytes of a file, decompressed when its name ends in `.xz` or `.gz`.

    Raises FileNotFoundError naming a missing file; ValueError naming a compressed file that is truncated or corrupt.
    """
    path = pathlib.Path(path)
    if path.suffix not in COMPRESSED:
        return path.read_bytes()
    kind, opener = COMPRESSED[path.suffix]
    try:
        with opener(path, "rb") as f:
            return f.read()
    except EOFError:
        raise ValueError(f"{path}: truncated {kind} file (it ends before the end-of-stream marker)") from None
    except (lzma.LZMAError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a valid {kind} file ({e})") from None


def read_text(path: PathLike, on_decode_error: str = "raise") -> Optional[str]:
    """The UTF-8 text of a file (decompressed, see `read_file_bytes`).

    A file that is not UTF-8 is a ValueError naming it, the byte offset and the line, or with
    `on_decode_error="skip"` a warning saying so, and None.
    """
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"on_decode_error must be 'raise' or 'skip', got {on_decode_error!r}")
    path = pathlib.Path(path)
    data = read_file_bytes(path)
    try:
        return decode_utf8(data, path, " of the decompressed text" if path.suffix in COMPRESSED else "")
    except ValueError as e:
        if on_decode_error == "raise":
            raise
        log.warning("%s; skipping the file", e)
        return None


def _expand(paths: Union[PathLike, Iterable[PathLike]]) -> list[pathlib.Path]:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
        elif any(c in str(path) for c in "*?["):
            found = sorted(pathlib.Path(path.anchor or ".").glob(str(path.relative_to(path.anchor or "."))))
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"{path}: no such file")
        if not found:
            raise FileNotFoundError(f"{path}: {'the folder holds no files' if path.is_dir() else 'no file matches'}")
        files += found
    return files


def read_text_files(paths: Union[PathLike, Iterable[PathLike]], *, on_decode_error: str = "raise",
                    one_document_per_file: bool = False) -> list[Document]:
    """Documents from plain UTF-8 text files (files, folders or glob patterns; `.xz`/`.gz` are decompressed).

    Each file is in BERT's format (a blank line between documents, one sentence or paragraph per line; long lines
    are split into sentences), or one document per file.
    Raises FileNotFoundError naming a missing file (or a folder or pattern with none); ValueError naming the file for
    one that is not UTF-8 (unless `on_decode_error="skip"`) or a corrupt compressed one, and for an empty corpus.
    """
    documents = []
    files = _expand(paths)
    for path in files:
        text = read_text(path, on_decode_error)
        if text is None:
            continue
        if one_document_per_file:
            sentences = split_sentences(text)
            documents += [sentences] if sentences else []
        else:
            documents += [[s for line in doc for s in split_sentences(line)] for doc in parse_documents(text)]
    check_not_empty(documents, f"the corpus read from {', '.join(map(str, files))}")
    return documents


def read_jsonl(paths: Union[PathLike, Iterable[PathLike]], *, text_field: str = "text",
               on_decode_error: str = "raise") -> list[Document]:
    """Documents from JSON Lines files, one JSON object per line whose `text_field` is the document's text.

    Raises ValueError naming the file and line for a line that is not JSON or lacks the field, and the errors of
    `read_text_files` for missing, undecodable or compressed files and an empty corpus.
    """
    documents = []
    files = _expand(paths)
    for path in files:
        text = read_text(path, on_decode_error)
        if text is None:
            continue
        for line_number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            record = parse_json(line, f"{path}:{line_number}")
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ValueError(f"{path}:{line_number}: no string field {text_field!r}")
            sentences = split_sentences(record[text_field])
            if sentences:
                documents.append(sentences)
    check_not_empty(documents, f"the corpus read from {', '.join(map(str, files))}")
    return documents


class TfdsDocuments:
    """Random access to a prepared tensorflow-datasets split as documents, through `tfds.data_source`.

    `tfds.data_source` reads the array_record files of a prepared dataset and needs no TensorFlow at run time
    (preparing wikipedia/c4/wmt itself does; prepare once with `tfds build` where TensorFlow is installed). Install
    with `pip install zoo[data]`.

    Args:
      name: a tfds name such as "wikipedia/20230601.en", "c4/en", "glue/sst2".
      split: e.g. "train", "train[:10%]".
      text_field: the feature with the text (bytes or str); `to_text` overrides it for other layouts.
    """

    def __init__(self, name: str, split: str = "train", *, text_field: str = "text", data_dir: Optional[str] = None,
                 to_text: Optional[Callable[[dict], str]] = None):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ImportError("TfdsDocuments needs tensorflow-datasets: pip install 'zoo[data]'") from None
        self.source = tfds.data_source(name, split=split, data_dir=data_dir)
        self.name, self.split = name, split
        self.to_text = to_text or (lambda record: record[text_field])
        check_not_empty(self.source, f"tfds {name}[{split}]")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Document:
        text = self.to_text(self.source[int(index)])
        if isinstance(text, bytes):
            text = decode_utf8(text, f"tfds {self.name}[{self.split}] record {index}")
        return split_sentences(str(text))


class TfdsRecords:
    """Random access to chosen fields of a prepared tfds split, as tuples: texts decoded to str, numbers to int.

    e.g. `TfdsRecords("glue/mnli", "train", fields=("premise", "hypothesis", "label"))` for `classification_batches`.
    """

    def __init__(self, name: str, split: str = "train", *, fields: Sequence[str], data_dir: Optional[str] = None):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ImportError("TfdsRecords needs tensorflow-datasets: pip install 'zoo[data]'") from None
        self.source = tfds.data_source(name, split=split, data_dir=data_dir)
        self.name, self.split, self.fields = name, split, tuple(fields)
        check_not_empty(self.source, f"tfds {name}[{split}]")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple:
        record = self.source[int(index)]
        return tuple(_plain(record[field], f"tfds {self.name}[{self.split}] record {index} field {field!r}")
                     for field in self.fields)


class TfdsPairs(TfdsRecords):
    """(source, target) text pairs of a prepared tfds translation split, e.g. "wmt14_translate/de-en" with the
    language codes as fields."""

    def __init__(self, name: str, split: str = "train", *, source_field: str, target_field: str,
                 data_dir: Optional[str] = None):
        super().__init__(name, split, fields=(source_field, target_field), data_dir=data_dir)


def tfds_tag_names(name: str, field: str, data_dir: Optional[str] = None) -> tuple[str, ...]:
    """The class names of tfds set `name`'s per-token tag feature `field`, by tag id, as its builder declares them
    (conll2003's "ner": O, B-PER, I-PER, ...). Raises ValueError naming the set and field when the field is not a
    sequence of class labels (or not a feature of the set)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("tfds_tag_names needs tensorflow-datasets: pip install 'zoo[data]'") from None
    features = tfds.builder(name, data_dir=data_dir).info.features
    if field not in features:
        raise ValueError(f"tfds {name} has no feature {field!r}; its features: {', '.join(features)}")
    feature = features[field]
    if not (isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature, tfds.features.ClassLabel)):
        raise ValueError(f"tfds {name} feature {field!r} is a {type(feature).__name__}, not a sequence of class "
                         f"labels (one tag per token): name the tag field in data.fields")
    return tuple(feature.feature.names)


def _plain(value, where: str):
    """A record's field as str (text, UTF-8 decoded; `where` names it in the error), a Python number, or a list of
    those for a sequence feature (conll2003's tokens and tags)."""
    if isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim):
        return [_plain(item, f"{where} item {k}") for k, item in enumerate(value)]
    if isinstance(value, bytes):
        return decode_utf8(value, where)
    if isinstance(value, (np.generic, np.ndarray)):  # NumPy scalars and 0-d arrays: labels, bytes text
        value = value.item()
        return decode_utf8(value, where) if isinstance(value, bytes) else value
    return value
