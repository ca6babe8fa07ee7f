"""Where documents come from: the shipped corpus, plain text files, JSONL, and tensorflow-datasets.

A document is a list of sentences (strings). A source is anything with `len()` and `[index]` returning a document,
so the loader can visit documents in a seeded order and resume anywhere: a Python list, `TextDocuments`, or
`TfdsDocuments` (random access into prepared array_record data, without TensorFlow).

Bad input fails before training: an empty corpus and a file that is not UTF-8 are `ValueError`s naming the file (and
byte offset); `on_decode_error="skip"` skips such a file with a warning instead.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from typing import Callable, Iterable, Optional, Sequence, Union

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
Document = list[str]
SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")


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


def _read_text(path: pathlib.Path, on_decode_error: str) -> Optional[str]:
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"on_decode_error must be 'raise' or 'skip', got {on_decode_error!r}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"{path}: not UTF-8 at byte offset {e.start} ({e.reason})"
        if on_decode_error == "raise":
            raise ValueError(message) from None
        log.warning("%s; skipping the file", message)
        return None


def _expand(paths: Union[PathLike, Iterable[PathLike]]) -> list[pathlib.Path]:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif any(c in str(path) for c in "*?["):
            files += sorted(pathlib.Path(path.anchor or ".").glob(str(path.relative_to(path.anchor or "."))))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file")
    return files


def read_text_files(paths: Union[PathLike, Iterable[PathLike]], *, on_decode_error: str = "raise",
                    one_document_per_file: bool = False) -> list[Document]:
    """Documents from plain UTF-8 text files (files, folders or glob patterns; `.xz`/`.gz` are decompressed).

    Each file is in BERT's format (a blank line between documents, one sentence or paragraph per line; long lines
    are split into sentences), or one document per file.
    Raises ValueError for a file that is not UTF-8 (unless `on_decode_error="skip"`) and for an empty corpus.
    """
    import gzip
    import lzma

    documents = []
    files = _expand(paths)
    for path in files:
        if path.suffix in (".xz", ".gz"):
            opener = lzma.open if path.suffix == ".xz" else gzip.open
            with opener(path, "rb") as f:
                data = f.read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                message = f"{path}: not UTF-8 at byte offset {e.start} of the decompressed text ({e.reason})"
                if on_decode_error == "raise":
                    raise ValueError(message) from None
                log.warning("%s; skipping the file", message)
                continue
        else:
            text = _read_text(path, on_decode_error)
            if text is None:
                continue
        if one_document_per_file:
            sentences = split_sentences(text)
            documents += [sentences] if sentences else []
        else:
            documents += [[s for line in doc for s in split_sentences(line)] for doc in parse_documents(text)]
    check_not_empty(documents, f"the text files {[str(f) for f in files]}")
    return documents


def read_jsonl(paths: Union[PathLike, Iterable[PathLike]], *, text_field: str = "text",
               on_decode_error: str = "raise") -> list[Document]:
    """Documents from JSON Lines files, one JSON object per line whose `text_field` is the document's text.

    Raises ValueError naming the file and line for a line that is not JSON or lacks the field.
    """
    documents = []
    files = _expand(paths)
    for path in files:
        text = _read_text(path, on_decode_error)
        if text is None:
            continue
        for line_number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ValueError(f"{path}:{line_number}: no string field {text_field!r}")
            sentences = split_sentences(record[text_field])
            if sentences:
                documents.append(sentences)
    check_not_empty(documents, f"the JSONL files {[str(f) for f in files]}")
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
            text = text.decode("utf-8")
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
        self.fields = tuple(fields)
        check_not_empty(self.source, f"tfds {name}[{split}]")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple:
        record = self.source[int(index)]
        return tuple(_plain(record[field]) for field in self.fields)


class TfdsPairs(TfdsRecords):
    """(source, target) text pairs of a prepared tfds translation split, e.g. "wmt14_translate/de-en" with the
    language codes as fields."""

    def __init__(self, name: str, split: str = "train", *, source_field: str, target_field: str,
                 data_dir: Optional[str] = None):
        super().__init__(name, split, fields=(source_field, target_field), data_dir=data_dir)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item"):  # NumPy scalars
        value = value.item()
        return value.decode("utf-8") if isinstance(value, bytes) else value
    return value
