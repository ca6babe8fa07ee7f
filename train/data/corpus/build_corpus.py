"""Rebuilds `python_docs.txt.xz`, the corpus that ships with zoo, from text every Python installation carries.

The text is the standard library's docstrings (read with `ast`, so no module is imported) and the help topics of
`pydoc_data.topics`, both under the Python Software Foundation License, which allows redistribution. The shipped
file was built with CPython 3.11.7; run `python -m train.data.corpus.build_corpus` to rebuild it (another Python
version gives slightly different text). Also rebuilds the WordPiece vocabularies `vocab.txt` (1024 tokens, the tiny
presets') and `vocab_4096.txt` (the demo's); `tokenizers` orders tokens of equal rank differently from run to run, so a
rebuild may renumber some.

Format (the BERT reference recipe's): one sentence per line, a blank line between documents.
"""

from __future__ import annotations

import ast
import lzma
import pathlib
import re
import sysconfig

HERE = pathlib.Path(__file__).parent
SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__", "ensurepip"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def paragraphs_to_sentences(text: str) -> list[str]:
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in paragraph.strip().splitlines()]
        if not lines or lines[0].startswith((">>>", "...", "$", "%")):
            continue  # interactive examples are code, not prose
        flat = re.sub(r"\s+", " ", " ".join(lines)).strip()
        sentences += [s for s in SENTENCE_END.split(flat) if len(s) > 2]
    return sentences


def module_docstrings(path: pathlib.Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                docs += paragraphs_to_sentences(doc)
    return docs


def documents() -> list[list[str]]:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        if SKIP_PARTS.intersection(path.relative_to(stdlib).parts):
            continue
        sentences = module_docstrings(path)
        if len(sentences) >= 2:
            docs.append(sentences)
    from pydoc_data.topics import topics

    for name in sorted(topics):
        sentences = paragraphs_to_sentences(topics[name])
        if len(sentences) >= 2:
            docs.append(sentences)
    return docs


def main() -> None:
    docs = documents()
    text = "\n\n".join("\n".join(doc) for doc in docs) + "\n"
    (HERE / "python_docs.txt.xz").write_bytes(lzma.compress(text.encode("utf-8"), preset=9))
    print(f"{len(docs)} documents, {sum(map(len, docs))} sentences, {len(text.encode()):,} bytes")
    from train.data.corpus import VOCAB_4096_FILE, VOCAB_FILE, train_wordpiece_vocab

    train_wordpiece_vocab(text.splitlines(), VOCAB_FILE, vocab_size=1024)
    train_wordpiece_vocab(text.splitlines(), VOCAB_4096_FILE, vocab_size=4096)


if __name__ == "__main__":
    main()
