"""Every file zoo reads that is missing, cut short or not what its name says is an error that names the file and says
what is wrong with it: checkpoints, tokenizer files, recipes and training text."""

import gzip
import json
import lzma
import re
import shutil
import struct

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import zoo
import zoo.tokenizers as zt
from tests.model_helpers import random_params
from train.data import corpus
from train.data.sources import read_jsonl, read_text_files
from train.recipes import load_recipe


def raises(error, path, problem):
    """pytest.raises(error) whose message holds the file's path and the words for the problem, in any order (case
    aside: "No such file" is Python's, "no such file" zoo's)."""
    return pytest.raises(error, match=f"(?is)(?=.*{re.escape(str(path))})(?=.*{re.escape(problem)})")


# -- checkpoints ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
    """A tiny BERT checkpoint of random weights, once whole and once in shards."""
    model = zoo.create("bert-tiny")
    params = random_params(model, *zoo.registry.example_inputs(model), seed=1)["params"]
    folder = tmp_path_factory.mktemp("checkpoints")
    zoo.save_pretrained(model, params, folder / "whole")
    zoo.save_pretrained(model, params, folder / "sharded", max_shard_size=100_000)
    assert len(list((folder / "sharded").glob("model-*.safetensors"))) > 1
    return folder


@pytest.fixture
def checkpoint(saved_checkpoints, tmp_path):
    return shutil.copytree(saved_checkpoints / "whole", tmp_path / "whole")


@pytest.fixture
def sharded(saved_checkpoints, tmp_path):
    return shutil.copytree(saved_checkpoints / "sharded", tmp_path / "sharded")


def test_config_json_that_is_not_json_is_named_with_its_line(checkpoint):
    (checkpoint / "config.json").write_text('{"model_type": "bert",\n "hidden_size": }')
    with raises(ValueError, checkpoint / "config.json", "not valid JSON") as error:
        zoo.from_pretrained(checkpoint)
    assert "line 2" in str(error.value)


def test_config_json_that_is_not_an_object_is_named(checkpoint):
    (checkpoint / "config.json").write_text('["bert"]')
    with raises(ValueError, checkpoint / "config.json", "not a JSON object (it holds an array)"):
        zoo.from_pretrained(checkpoint)


def test_index_that_is_not_json_is_named(sharded):
    index = sharded / "model.safetensors.index.json"
    index.write_text(index.read_text()[:40])
    with raises(ValueError, index, "not valid JSON"):
        zoo.from_pretrained(sharded)


def test_index_without_a_weight_map_is_named(sharded):
    index = sharded / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}}))
    with raises(ValueError, index, 'no "weight_map" object'):
        zoo.from_pretrained(sharded)


def test_shard_the_index_lists_but_the_folder_lacks_is_named_with_the_index(sharded):
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with raises(FileNotFoundError, sharded / "model.safetensors.index.json", shard.name):
        zoo.from_pretrained(sharded)


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(4096),
    b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1234\n",
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n",
    b"",
    struct.pack("<Q", 4) + b"nope",
], ids=["random_bytes", "lfs_pointer_text", "html_page", "empty", "no_json_header"])
def test_weights_that_are_not_safetensors_are_named(checkpoint, content):
    (checkpoint / "model.safetensors").write_bytes(content)
    with raises(ValueError, checkpoint / "model.safetensors", "not a safetensors file"):
        zoo.from_pretrained(checkpoint)


def test_weights_whose_header_is_not_json_are_named(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"{not json}")
    with raises(ValueError, checkpoint / "model.safetensors", "its header is not valid JSON"):
        zoo.from_pretrained(checkpoint)


@pytest.mark.parametrize("keep", [
    lambda data, header: len(data) // 2,
    lambda data, header: 8 + header // 2,
    lambda data, header: len(data) - 1,
], ids=["cut_in_half", "cut_inside_the_header", "last_byte_missing"])
def test_truncated_weights_are_named_truncated(checkpoint, keep):
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep(data, int.from_bytes(data[:8], "little"))])
    with raises(ValueError, weights, "truncated"):
        zoo.from_pretrained(checkpoint)


def test_truncated_shard_is_named_truncated(sharded):
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with raises(ValueError, shard, "truncated"):
        zoo.from_pretrained(sharded)


def test_bfloat16_weights_load_as_bfloat16_and_a_truncated_one_is_named(checkpoint):
    weights = checkpoint / "model.safetensors"
    with safe_open(weights, framework="numpy") as f:
        stored = {name: f.get_tensor(name).astype(ml_dtypes.bfloat16) for name in f.keys()}
    save_file(stored, weights)
    model, params = zoo.from_pretrained(checkpoint, param_dtype="bfloat16")
    embedding = params["embeddings"]["position_embedding"]["embedding"]
    assert embedding.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(embedding), stored["embeddings.position_embeddings.weight"])
    weights.write_bytes(weights.read_bytes()[:-10])
    with raises(ValueError, weights, "truncated: its tensors need"):
        zoo.from_pretrained(checkpoint)


# -- tokenizers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("load, name", [
    (lambda folder: zt.wordpiece(folder / "vocab.txt"), "vocab.txt"),
    (lambda folder: zt.byte_level_bpe(folder / "vocab.json", folder / "merges.txt"), "vocab.json"),
    (lambda folder: zt.from_tokenizer_json(folder / "tokenizer.json"), "tokenizer.json"),
    (lambda folder: zt.SentencePieceTokenizer(folder / "spiece.model"), "spiece.model"),
], ids=["wordpiece", "byte_level_bpe", "tokenizer_json", "sentencepiece"])
def test_missing_tokenizer_file_is_named(tmp_path, load, name):
    with raises(FileNotFoundError, tmp_path / name, "no such file"):
        load(tmp_path)


def test_missing_merges_file_is_named(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}))
    with raises(FileNotFoundError, tmp_path / "merges.txt", "no such file"):
        zt.byte_level_bpe(tmp_path / "vocab.json", tmp_path / "merges.txt")


@pytest.mark.parametrize("files, broken, problem", [
    ({"vocab.txt": "[UNK]\ncaf\xe9\n".encode("latin-1")}, "vocab.txt", "not UTF-8 at byte offset 9, line 2"),
    ({"tokenizer.json": b'{"version": "1.0", "model": '}, "tokenizer.json", "not a valid tokenizer.json"),
    ({"vocab.json": b'{"a": "zero"}', "merges.txt": b"#version: 0.2\n"}, "vocab.json", "integer ids"),
    ({"vocab.json": b'{"<pad>": 0,', "source.spm": b"read after vocab.json", "target.spm": b"read after vocab.json"},
     "vocab.json", "not valid JSON"),
    ({"spiece.model": b"<html>not a model</html>"}, "spiece.model", "not a SentencePiece model"),
    ({"tokenizer_config.json": b"{'do_lower_case': True}"}, "tokenizer_config.json", "not valid JSON"),
    ({"special_tokens_map.json": b"{'cls_token': '[CLS]'}"}, "special_tokens_map.json", "not valid JSON"),
    ({"special_tokens_map.json": b'"[CLS]"'}, "special_tokens_map.json", "not a JSON object (it holds a string)"),
], ids=["vocab_txt_not_utf8", "tokenizer_json_not_json", "gpt2_vocab_json_without_integer_ids",
        "marian_vocab_json_not_json", "spiece_model_not_a_model", "tokenizer_config_not_json",
        "special_tokens_map_not_json", "special_tokens_map_not_an_object"])
def test_tokenizer_file_that_does_not_parse_is_named_with_the_problem(tmp_path, files, broken, problem):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with raises(ValueError, tmp_path / broken, problem):
        zt.from_pretrained(tmp_path)


# -- recipes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source, problem", [
    ("def get_config(:\n    pass\n", ":1: the recipe has a syntax error"),
    ("import zoo_no_such_module\n", "importing the recipe raised ModuleNotFoundError"),
    ("from train.recipes import base_config\nc = base_config()\n", "a recipe defines get_config()"),
    ("def get_config():\n    return {'model': 'bert-tiny'}\n", "get_config() returned a dict, not an ml_collections"),
    ("def get_config():\n    raise KeyError('steps')\n", "get_config() raised KeyError"),
], ids=["syntax_error", "raises_on_import", "no_get_config", "returns_a_dict", "get_config_raises"])
def test_broken_recipe_is_named(tmp_path, source, problem):
    recipe = tmp_path / "my_recipe.py"
    recipe.write_text(source)
    with raises(ValueError, recipe, problem):
        load_recipe(str(recipe))


# -- training text -------------------------------------------------------------------------------------------------
def test_text_that_is_not_utf8_is_named_with_offset_and_line(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"fine text\nthen caf\xe9\n")
    with raises(ValueError, path, "not UTF-8 at byte offset 18, line 2"):
        read_text_files(path)
    with raises(ValueError, path, "no documents"):  # skipped with a warning, which leaves nothing
        read_text_files(path, on_decode_error="skip")


def test_compressed_text_that_is_not_utf8_is_named_with_the_decompressed_offset(tmp_path):
    path = tmp_path / "b.txt.gz"
    path.write_bytes(gzip.compress(b"fine\ncaf\xe9\n"))
    with raises(ValueError, path, "not UTF-8 at byte offset 8 of the decompressed text, line 2"):
        read_text_files(path)


def test_jsonl_line_that_is_not_json_is_named_with_its_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "One."}\n{"text": "Two.",\n')
    with raises(ValueError, f"{path}:2", "not valid JSON"):
        read_jsonl(path)


def test_jsonl_record_without_the_text_field_is_named_with_its_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "One."}\n\n{"body": "Two."}\n')
    with raises(ValueError, f"{path}:3", "no string field 'text'"):
        read_jsonl(path)


def test_jsonl_that_is_not_utf8_is_named_with_offset_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "One."}\n{"text": "caf\xe9"}\n')
    with raises(ValueError, path, "not UTF-8 at byte offset 30, line 2"):
        read_jsonl(path)


@pytest.mark.parametrize("read", [read_text_files, read_jsonl], ids=["text", "jsonl"])
def test_missing_text_file_is_named(tmp_path, read):
    with raises(FileNotFoundError, tmp_path / "absent.txt", "no such file"):
        read(tmp_path / "absent.txt")


def test_folder_or_pattern_without_files_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with raises(FileNotFoundError, tmp_path / "empty", "the folder holds no files"):
        read_text_files(tmp_path / "empty")
    with raises(FileNotFoundError, tmp_path / "*.txt", "no file matches"):
        read_text_files(tmp_path / "*.txt")


@pytest.mark.parametrize("read, content", [
    (read_text_files, "\n \n\t\n"),
    (read_jsonl, '{"text": ""}\n{"text": "  "}\n'),
], ids=["text", "jsonl"])
def test_corpus_without_documents_names_the_files_read(tmp_path, read, content):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(content)
    second.write_text(content)
    with raises(ValueError, f"the corpus read from {first}, {second} holds no documents", "nothing to train on"):
        read(tmp_path)


@pytest.mark.parametrize("suffix, compress", [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_truncated_compressed_text_is_named(tmp_path, suffix, compress):
    path = tmp_path / f"docs.txt{suffix}"
    data = compress(b"One sentence.\n" * 200)
    path.write_bytes(data[:len(data) // 2])
    with raises(ValueError, path, "truncated"):
        read_text_files(path)


@pytest.mark.parametrize("suffix, kind", [(".xz", "xz"), (".gz", "gzip")])
def test_compressed_text_that_is_not_compressed_is_named(tmp_path, suffix, kind):
    path = tmp_path / f"docs.txt{suffix}"
    path.write_text("plain text, not compressed\n")
    with raises(ValueError, path, f"not a valid {kind} file"):
        read_text_files(path)


def test_corrupt_shipped_corpus_is_named(tmp_path, monkeypatch):
    broken = tmp_path / "python_docs.txt.xz"
    data = corpus.CORPUS_FILE.read_bytes()
    broken.write_bytes(data[:1000])
    monkeypatch.setattr(corpus, "CORPUS_FILE", broken)
    with raises(ValueError, broken, "truncated xz file"):
        corpus.shipped_documents()
    broken.write_bytes(data[:100] + bytes(200) + data[300:])
    with raises(ValueError, broken, "not a valid xz file"):
        corpus.shipped_documents()
