"""Reading the text and JSON files zoo loads (checkpoint configs and indexes, tokenizer files, training text): a file
that does not parse is a `ValueError` that names the file and says what is wrong with it, so a user sees which of
the files in a folder to fix, not a bare decoder error."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Union

PathLike = Union[str, os.PathLike]
JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
              type(None): "null"}


def decode_utf8(data: bytes, path: PathLike, where: str = "") -> str:
    """`data`, the bytes of the file at `path` (or of the record a string `path` names), as text. Raises ValueError
    naming the file, the byte offset and the line of the first byte that is not UTF-8; `where` qualifies the offset
    (" of the decompressed text")."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}: not UTF-8 at byte offset {e.start}{where}, line {line} ({e.reason})") from None


def read_utf8(path: PathLike) -> str:
    """The text of a file. Raises FileNotFoundError naming a missing file, ValueError (see `decode_utf8`) for one
    that is not UTF-8."""
    return decode_utf8(pathlib.Path(path).read_bytes(), path)


def parse_json(text: str, where: str | PathLike):
    """The JSON value `text` holds. Raises ValueError "{where}: not valid JSON (...)" with the line and column;
    `where` names the text: a file, or "file:line" for a record of a JSON Lines file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None


def read_json_object(path: PathLike) -> dict:
    """The JSON object a file holds (config.json, an index, tokenizer_config.json, vocab.json).

    Raises FileNotFoundError naming a missing file; ValueError naming the file when it is not UTF-8, not valid JSON
    (with the line and column) or JSON that is not an object.
    """
    value = parse_json(read_utf8(path), path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object (it holds {JSON_KINDS[type(value)]})")
    return value
