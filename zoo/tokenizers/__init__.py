"""Tokenizers for every zoo family, one small interface over the well-kept libraries.

- WordPiece (BERT `vocab.txt`), the byte-level BPE of GPT-2 and of RoBERTa (`vocab.json` + `merges.txt`), and any
  `tokenizer.json` (Llama 2 / Mistral's SentencePiece-BPE with byte fallback, the byte-level BPE of Llama 3 and Qwen2,
  each with the special tokens its tokenizer_config.json names), run on the `tokenizers` package (the Rust code behind
  `transformers`' fast tokenizers): `rust.py`.
- SentencePiece models (ALBERT's `spiece.model`, Marian's `source.spm`/`target.spm`, or one trained here with
  `train_sentencepiece`) run on `sentencepiece`: `sentencepiece.py`.

`from_pretrained(folder)` (`pretrained.py`) picks the right one from the files in a checkpoint folder. Every
tokenizer has (`interface.py`):

    encode(text) -> ids                 encode_pair(a, b) -> (ids, token_type_ids)
    encode_plain(texts) -> [ids]        (no special tokens; batched)
    encode_batch(texts, max_length=...) -> {"input_ids", "attention_mask", "token_type_ids" (BERT, ALBERT)}
    decode(ids) -> text                 pad_id, cls_id, sep_id, mask_id, unk_id, bos_id, eos_id, special_ids

The ids equal those of the reference tokenizers in `transformers` (tests/test_tokenizers.py checks Chinese, accents,
emoji and very long words). A file that does not parse is a `ValueError` naming the file and what is wrong with it,
and a missing one a `FileNotFoundError` naming it, before anything runs.
"""

from zoo.tokenizers.interface import (ROLES, PathLike, Text, Tokenizer, TranslationTokenizers, read_vocab_json,
                                      truncate_longest_first, write_tokenizer_config)
from zoo.tokenizers.pretrained import (BYTE_LEVEL_BPE_OF_MODEL, MODEL_OF_TOKENIZER_CLASS, from_pretrained,
                                       model_type_of, read_tokenizer_config, special_tokens_from_config)
from zoo.tokenizers.rust import (BERT_SPECIALS, BYTE_LEVEL_WORD_START, GPT2_SPECIALS, ROBERTA_SPECIALS, RustTokenizer,
                                 byte_level_bpe, from_tokenizer_json, read_bpe_merges, read_wordpiece_vocab,
                                 roberta_byte_level_bpe, wordpiece)
from zoo.tokenizers.sentencepiece import MARIAN_SPECIALS, SentencePieceTokenizer, marian, train_sentencepiece

__all__ = [
    "ROLES", "PathLike", "Text", "Tokenizer", "TranslationTokenizers", "read_vocab_json", "truncate_longest_first",
    "write_tokenizer_config",
    "BYTE_LEVEL_BPE_OF_MODEL", "MODEL_OF_TOKENIZER_CLASS", "from_pretrained", "model_type_of",
    "read_tokenizer_config", "special_tokens_from_config",
    "BERT_SPECIALS", "BYTE_LEVEL_WORD_START", "GPT2_SPECIALS", "ROBERTA_SPECIALS", "RustTokenizer", "byte_level_bpe",
    "from_tokenizer_json", "read_bpe_merges", "read_wordpiece_vocab", "roberta_byte_level_bpe", "wordpiece",
    "MARIAN_SPECIALS", "SentencePieceTokenizer", "marian", "train_sentencepiece",
]
