"""Resumable, host-sharded iterators of fixed-shape NumPy batches for every zoo family, built by grain.

    batches = bert_pretraining_batches(documents, tokenizer, batch_size=32, max_length=128, seed=0)
    batch = next(batches)          # {"input_ids", "attention_mask", "token_type_ids", "mlm_labels",
                                   #  "next_sentence_labels"}: int32 NumPy arrays
    state = batches.get_state()    # a small JSON-serializable dict: save it with the model's checkpoint
    batches.set_state(state)       # continues with exactly the batch that would have come next

The pipeline is grain's (`Batches.dataset()`): a seeded order of the document indices, reshuffled each epoch
(`MapDataset.shuffle` + `repeat`), sliced by host; each (epoch, document) flat-mapped to the recipe's examples, which
draw from a generator seeded by (seed, epoch, document), dynamic masking included; for causal LM the examples packed
by grain's concat-then-split (`pack_tokens`); optionally window-shuffled; batched (the last partial batch of a finite
pass dropped, so every batch has the same shape); and with `workers` built in that many processes (`mp_prefetch`).
What zoo keeps is what grain has no stage for: the papers' example builders (sentence pairs, span corruption, text
infilling, SQuAD windows...). The state is grain's iterator state, so resume is exact with any of those stages.

Two ways to split the work among hosts (`shard=`):
- "documents" (default, scales to any corpus): host `process_index` of `process_count` takes every
  `process_count`-th document of the epoch's order, so hosts read disjoint documents whose union is the corpus.
  Same seed and host count, same batches.
- "rows": every host makes the whole global batch and keeps its rows of it. Same seed, same global batches on any
  number of hosts (a state saved on 4 hosts resumes on 8), at the price of every host tokenizing every document.
"""

from __future__ import annotations

import abc
import functools
import re
from typing import Any, Iterator, Optional, Sequence

import grain
import numpy as np

from train.data.pretraining import (IGNORE_INDEX, make_sentence_pairs, make_seq2seq_example, mask_tokens,
                                    maskable_positions, pack_tokens, random_spans_noise_mask, span_corruption,
                                    text_infilling)
from train.data.sources import check_not_empty

Batch = dict[str, np.ndarray]
STATE_KEYS = ("seed", "process_count", "workers", "pipeline")


def end_of_text_id(tokenizer) -> int:
    """The id that ends a document: the tokenizer's EOS, else its [SEP]."""
    for token_id in (tokenizer.eos_id, tokenizer.sep_id):
        if token_id is not None:
            return token_id
    raise ValueError("the tokenizer has neither an EOS nor a [SEP] token to end documents with")


class TokenizedDocuments:
    """Documents (lists of sentences) turned into lists of id arrays on first use, and kept (up to `cache_size`)."""

    def __init__(self, documents: Sequence, tokenizer, cache_size: Optional[int] = 1 << 16):
        check_not_empty(documents, "the corpus")
        self.documents, self.tokenizer, self.cache_size = documents, tokenizer, cache_size
        self._get = functools.lru_cache(maxsize=cache_size)(self._tokenize)

    def __getstate__(self) -> dict:  # to a grain worker process: the sources and the tokenizer, not the cache
        return {"documents": self.documents, "tokenizer": self.tokenizer, "cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _tokenize(self, index: int) -> list[np.ndarray]:
        sentences = self.documents[index]
        if not sentences:
            return []
        return [np.asarray(ids, np.int32) for ids in self.tokenizer.encode_plain(list(sentences))]

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> list[np.ndarray]:
        return self._get(int(index))


class Recipe(abc.ABC):
    """How a recipe's rows are made: `examples(documents, index, rng)` gives one document's (or record's) examples,
    from a generator seeded by (seed, epoch, document); `pack` turns the stream of examples into rows (the
    examples are the rows, but for packing recipes)."""

    tokenizes_documents = True  # documents are lists of sentences, read as token ids (`TokenizedDocuments`)
    tokenizer: Any

    @abc.abstractmethod
    def examples(self, documents: Sequence, index: int, rng: np.random.Generator) -> list:
        """The examples of `documents[index]` (none for a document too short for one)."""

    def pack(self, examples: grain.IterDataset) -> grain.IterDataset:
        return examples

    def rows_made(self, examples: list) -> float:
        """How many rows `examples` become once packed: one each, but for packing recipes."""
        return len(examples)


class SentencePairRecipe(Recipe):
    """BERT (objective "nsp") or ALBERT ("sop") pre-training rows: [CLS] A [SEP] B [SEP], masked per batch."""

    def __init__(self, tokenizer, max_length: int, *, objective: str = "nsp", short_seq_prob: float = 0.1,
                 mask_rate: float = 0.15, mask_token_rate: float = 0.8, random_token_rate: float = 0.1,
                 max_predictions: Optional[int] = None, whole_word_masking: bool = False):
        if tokenizer.mask_id is None:
            raise ValueError("masked-LM pre-training needs a tokenizer with a [MASK] token")
        special = tokenizer.num_special_tokens(pair=True)
        if max_length < special + 2:
            raise ValueError(f"max_length={max_length} is too small: the special tokens of a pair need {special} "
                             f"and each segment at least one token")
        self.tokenizer, self.max_length, self.objective = tokenizer, max_length, objective
        self.short_seq_prob = short_seq_prob
        self.max_num_tokens = max_length - special
        self.mask_options = dict(mask_rate=mask_rate, mask_token_rate=mask_token_rate,
                                 random_token_rate=random_token_rate, max_predictions=max_predictions)
        self.special_ids = np.array(sorted(tokenizer.special_ids), np.int64)
        self.random_token_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), self.special_ids)
        self.word_starts = tokenizer.word_start_table() if whole_word_masking else None
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def examples(self, documents: TokenizedDocuments, index: int, rng: np.random.Generator) -> list[dict]:
        """The document's pairs, masked dynamically: the generator is seeded by (seed, epoch, document), so an
        epoch masks a pair anew, on any host and in any worker."""
        pairs = make_sentence_pairs(index, documents.__getitem__, len(documents), rng,
                                    max_num_tokens=self.max_num_tokens, short_seq_prob=self.short_seq_prob,
                                    objective=self.objective)
        if not pairs:
            return []
        rows = {"input_ids": np.full((len(pairs), self.max_length), self.pad_id, np.int32),  # [pairs, max_length]
                "attention_mask": np.zeros((len(pairs), self.max_length), np.int32),
                "token_type_ids": np.zeros((len(pairs), self.max_length), np.int32),
                "next_sentence_labels": np.array([label for _, _, label in pairs], np.int32)}
        for row, (a, b, _) in enumerate(pairs):
            ids, types = self.tokenizer.build_pair(a, b)
            rows["input_ids"][row, :len(ids)] = ids
            rows["attention_mask"][row, :len(ids)] = 1
            rows["token_type_ids"][row, :len(ids)] = types
        maskable = maskable_positions(rows["input_ids"], self.special_ids) & (rows["attention_mask"] > 0)
        word_starts = None if self.word_starts is None else self.word_starts[rows["input_ids"]]
        rows["input_ids"], rows["mlm_labels"] = mask_tokens(
            rows["input_ids"], maskable, rng, mask_id=self.tokenizer.mask_id,
            random_token_ids=self.random_token_ids, word_starts=word_starts, **self.mask_options)
        return [{key: value[row] for key, value in rows.items()} for row in range(len(pairs))]


class CausalLMRecipe(Recipe):
    """GPT rows: documents joined with EOS and packed into `max_length` tokens (see `pack_tokens`). A tokenizer with a
    BOS of its own (Llama's <s>, Llama 3's <|begin_of_text|>; not GPT-2's, which is its EOS) also opens each
    document with it, as those models saw their documents in pre-training."""

    def __init__(self, tokenizer, max_length: int, *, eos_id: Optional[int] = None):
        if max_length < 2:
            raise ValueError(f"max_length={max_length} is too small for causal LM rows")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.eos_id = end_of_text_id(tokenizer) if eos_id is None else eos_id
        self.opening = [] if tokenizer.bos_id in (None, self.eos_id) else [tokenizer.bos_id]
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else self.eos_id

    def examples(self, documents: TokenizedDocuments, index: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The document's tokens, opened with BOS (if any) and closed with EOS: one piece for `pack_tokens`."""
        sentences = documents[index]
        if not sentences:
            return []
        return [np.concatenate([self.opening, *sentences, [self.eos_id]]).astype(np.int32)]

    def pack(self, pieces: grain.IterDataset) -> grain.IterDataset:
        return pack_tokens(pieces, self.max_length, pad_id=self.pad_id)

    def rows_made(self, pieces: list[np.ndarray]) -> float:
        return sum(len(piece) for piece in pieces) / self.max_length


class Seq2SeqRecipe(Recipe):
    """Encoder-decoder rows from (source text, target text) pairs, padded to fixed lengths."""

    tokenizes_documents = False  # reads text records itself

    def __init__(self, source_tokenizer, max_source_length: int, max_target_length: Optional[int] = None, *,
                 target_tokenizer=None, decoder_start_id: Optional[int] = None):
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer or source_tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length or max_source_length
        self.eos_id = end_of_text_id(self.target_tokenizer)
        self.source_eos_id = end_of_text_id(self.source_tokenizer)
        self.pad_id = self.target_tokenizer.pad_id if self.target_tokenizer.pad_id is not None else 0
        self.decoder_start_id = decoder_start_id

    def examples(self, pairs: Sequence, index: int, rng: np.random.Generator) -> list[dict]:
        source, target = pairs[index]
        source_ids = self.source_tokenizer.encode(source, add_special_tokens=False)
        target_ids = self.target_tokenizer.encode(target, add_special_tokens=False)
        example = make_seq2seq_example(source_ids, target_ids, max_source_length=self.max_source_length,
                                       max_target_length=self.max_target_length, eos_id=self.eos_id,
                                       pad_id=self.pad_id, decoder_start_id=self.decoder_start_id,
                                       source_eos_id=self.source_eos_id)
        return [example]



class TextInfillingRecipe(Recipe):
    """BART's denoising rows: each document cut into pieces of max_length - 2 tokens; the source is <s> piece </s>
    after `text_infilling`, the target (labels) <s> piece </s>, the decoder inputs the target after </s>, as BART's."""

    def __init__(self, tokenizer, max_length: int, *, mask_ratio: float = 0.3, poisson_lambda: float = 3.0):
        if tokenizer.mask_id is None or tokenizer.cls_id is None:
            raise ValueError("text infilling needs a tokenizer with a mask token and a start token (<s> or [CLS])")
        if max_length < 3:
            raise ValueError(f"max_length={max_length} is too small: <s>, a token and </s> need 3")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.noise = dict(mask_id=tokenizer.mask_id, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda)
        self.eos_id = end_of_text_id(tokenizer)
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def examples(self, documents: TokenizedDocuments, index: int, rng: np.random.Generator) -> list[dict]:
        sentences = documents[index]
        if not sentences:
            return []
        tokens = np.concatenate(sentences).astype(np.int32)
        size = self.max_length - 2
        return [make_seq2seq_example([self.tokenizer.cls_id, *text_infilling(piece, rng, **self.noise)],
                                     [self.tokenizer.cls_id, *piece], max_source_length=self.max_length,
                                     max_target_length=self.max_length, eos_id=self.eos_id, pad_id=self.pad_id,
                                     decoder_start_id=self.eos_id)
                for piece in (tokens[i:i + size] for i in range(0, len(tokens), size))]



class SpanCorruptionRecipe(Recipe):
    """T5's span-corruption rows (Raffel et al. 2020): each document's tokens cut into chunks that, with their
    dropped spans (`random_spans_noise_mask`) turned into sentinels, fill `max_length` source tokens; the target is
    the sentinels and their spans. `sentinel_ids`: <extra_id_0>, <extra_id_1>, ... (default: the tokenizer's)."""

    def __init__(self, tokenizer, max_length: int, max_target_length: Optional[int] = None, *,
                 noise_density: float = 0.15, mean_span_length: float = 3.0,
                 sentinel_ids: Optional[Sequence[int]] = None):
        if sentinel_ids is None:
            sentinel_ids = [tokenizer.token_to_id(f"<extra_id_{n}>") for n in range(100)]
            if None in sentinel_ids:
                raise ValueError("span corruption needs T5's sentinels <extra_id_0..99>, which the tokenizer lacks: "
                                 "use a T5 tokenizer or pass sentinel_ids")
        self.tokenizer, self.sentinel_ids = tokenizer, list(sentinel_ids)
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        self.max_length, self.max_target_length = max_length, max_target_length or max_length
        self.eos_id = end_of_text_id(tokenizer)
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.chunk_length = self._chunk_length()

    def _chunk_length(self) -> int:
        """The most raw tokens whose corrupted input and target (each with EOS) fit the lengths."""
        best = 0
        for length in range(2, 4 * self.max_length):
            noise = min(max(int(round(length * self.noise_density)), 1), length - 1)
            spans = max(int(round(noise / self.mean_span_length)), 1)
            if length - noise + spans + 1 <= self.max_length and noise + spans + 1 <= self.max_target_length:
                best = length
        if best < 2:
            raise ValueError(f"max_length={self.max_length} is too small for span corruption")
        return best

    def examples(self, documents: TokenizedDocuments, index: int, rng: np.random.Generator) -> list[dict]:
        sentences = documents[index]
        if not sentences:
            return []
        tokens = np.concatenate(sentences).astype(np.int32)
        examples = []
        for start in range(0, len(tokens) - 1, self.chunk_length):
            chunk = tokens[start:start + self.chunk_length]
            if len(chunk) < 2:
                continue
            mask = random_spans_noise_mask(len(chunk), rng, noise_density=self.noise_density,
                                           mean_span_length=self.mean_span_length)
            source, target = span_corruption(chunk.tolist(), mask, self.sentinel_ids)
            examples.append(make_seq2seq_example(source, target, max_source_length=self.max_length,
                                                 max_target_length=self.max_target_length, eos_id=self.eos_id,
                                                 pad_id=self.pad_id))
        return examples



class ClassificationRecipe(Recipe):
    """Fine-tuning rows (GLUE-style) from (text, label) or (text_a, text_b, label) records; `labels` is [batch], int32
    class ids, or float32 scores for a regression set (STS-B, a num_labels=1 head)."""

    tokenizes_documents = False

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def examples(self, records: Sequence, index: int, rng: np.random.Generator) -> list[dict]:
        *texts, label = records[index]
        text = texts[0] if len(texts) == 1 or texts[1] is None else (texts[0], texts[1])
        row = {k: v[0] for k, v in self.tokenizer.encode_batch([text], max_length=self.max_length).items()}
        # a real-valued label (STS-B's similarity) is a regression target, a whole number a class
        row["labels"] = np.float32(label) if isinstance(label, float) else np.int32(label)
        return [row]



class TaggingRecipe(Recipe):
    """Token-classification rows (CoNLL-style NER) from (words, tags) records; `labels` is [batch, length].

    Each word is tokenized alone, with the space before it when it is not the first (so byte-level BPE reads it as
    it reads the word inside the sentence, as `SpanQARecipe` does), and the row is the tokenizer's single-sequence
    template around the words' ids ([CLS] words [SEP] for BERT, <s> words </s> for RoBERTa). A word's tag goes on its
    first sub-word and `IGNORE_INDEX` on its other sub-words, the special tokens and the padding, as transformers'
    run_ner does by default (`label_all_tokens=False`), so the loss and the metric count each word once. A row longer
    than `max_length` keeps the words that fit whole; the rest are dropped. A word with no tokens at all (only
    characters the tokenizer removes) has nowhere to put its tag and is dropped too, as in run_ner.
    """

    tokenizes_documents = False

    def __init__(self, tokenizer, max_length: int):
        if max_length <= tokenizer.num_special_tokens():
            raise ValueError(f"max_length={max_length} leaves no room for a word: the special tokens alone need "
                             f"{tokenizer.num_special_tokens()}")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def examples(self, records: Sequence, index: int, rng: np.random.Generator) -> list[dict]:
        words, tags = records[index]
        if len(words) != len(tags):
            raise ValueError(f"record {index}: {len(words)} words but {len(tags)} tags; a tag per word")
        pieces = self.tokenizer.encode_plain([w if k == 0 else " " + w for k, w in enumerate(words)]) if words else []
        budget = self.max_length - self.tokenizer.num_special_tokens()
        word_ids, word_labels = [], []
        for ids, tag in zip(pieces, tags):
            if not ids:
                continue
            if len(word_ids) + len(ids) > budget:
                break
            word_ids += ids
            word_labels += [int(tag)] + [IGNORE_INDEX] * (len(ids) - 1)
        ids, token_types = self.tokenizer.build_pair(word_ids)
        labels = [IGNORE_INDEX] * len(self.tokenizer.prefix) + word_labels
        pad = self.max_length - len(ids)
        row = {"input_ids": ids + [self.pad_id] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
               "labels": labels + [IGNORE_INDEX] * (self.max_length - len(labels))}
        if self.tokenizer.has_token_types:  # the keys `encode_batch` gives this tokenizer's models
            row["token_type_ids"] = token_types + [0] * pad
        return [row]



MAX_CACHED_WORDS = 1 << 20  # SpanQARecipe's distinct words (with their leading whitespace) remembered: ~200 MB at most


class SpanQARecipe(Recipe):
    """Extractive QA rows (SQuAD-style) from (question, context, answer_start, answer_text) records.

    A row is [CLS] question [SEP] window [SEP], where a window is a run of the context's tokens: a context longer than
    the room left after the question becomes several windows, each sharing its first `doc_stride` tokens with the end
    of the one before (`return_overflowing_tokens` with `stride=doc_stride` in `transformers`, whose run_qa uses 128
    at 384 tokens; BERT's run_squad instead moves each window's start on by its doc_stride). `start_positions` / `end_positions` index
    the answer's first and last token; a window that does not hold the whole answer points both at [CLS] (0), as
    BERT's SQuAD recipe does. The question keeps at most half the room.

    Each row also carries what `train.squad.decode_answers` needs to turn predicted positions back into text of the
    original context: `example_index` (the record's index) and `token_char_start` / `token_char_end` [length], the
    characters [start, end) of the context each token came from (-1 for the question, specials and padding).

    Offsets without a tokenizer that reports them: the context is cut at whitespace into words (a word keeps the
    whitespace before it, which byte-level BPE reads as part of its first token), so each word's ids are those of
    the whole context; a word is further cut at punctuation ("Cat!" -> "Cat", "!"), and those finer ids are kept
    when they equal the word's (always for WordPiece, whose pre-tokenizer cuts there too), so answers end exactly
    at punctuation. Tokens of one piece share its characters: a span starting or ending inside a piece of several
    sub-words gives the whole piece.
    """

    tokenizes_documents = False

    def __init__(self, tokenizer, max_length: int, *, doc_stride: int = 128):
        if max_length <= tokenizer.num_special_tokens(pair=True) + 1:
            raise ValueError(f"max_length={max_length} leaves no room for a question and a context")
        if doc_stride < 0:
            raise ValueError(f"doc_stride={doc_stride} must be >= 0 (tokens shared by consecutive windows)")
        self.tokenizer, self.max_length, self.doc_stride = tokenizer, max_length, doc_stride
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        # SQuAD asks ~5 questions of each of its ~20k contexts: tokenize a context once (~2 KB each)
        self.context_tokens = functools.lru_cache(maxsize=1 << 15)(self._context_tokens)
        self.word_ids: dict[str, list[int]] = {}  # a word (with the whitespace before it) -> its ids

    def _encode_words(self, texts: list[str]) -> list[list[int]]:
        """`encode_plain` of each text, remembering the ids of each distinct word: most of a context's words were in
        an earlier one, and a dictionary look-up is far cheaper than the tokenizer's call per word."""
        new = [text for text in dict.fromkeys(texts) if text not in self.word_ids]
        fresh = dict(zip(new, self.tokenizer.encode_plain(new))) if new else {}
        if len(self.word_ids) < MAX_CACHED_WORDS:
            self.word_ids.update(fresh)
        return [fresh[text] if text in fresh else self.word_ids[text] for text in texts]

    def _context_tokens(self, context: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, char_start, char_end) [tokens] of the context; token t came from context[char_start[t]:char_end[t]]."""
        words = list(re.finditer(r"\S+", context))
        # a word with punctuation in its pieces ("Cat!" -> "Cat", "!"); one piece: None, its ids are the word's
        pieces = [list(re.finditer(r"\w+|[^\w\s]", word.group())) for word in words]
        pieces = [word_pieces if len(word_pieces) > 1 else None for word_pieces in pieces]
        texts, previous_end = [], 0
        for word, word_pieces in zip(words, pieces):
            leading = context[previous_end:word.start()]  # the whitespace before the word rides with its first piece
            texts.append(leading + word.group())
            if word_pieces:
                texts += [(leading if k == 0 else "") + piece.group() for k, piece in enumerate(word_pieces)]
            previous_end = word.end()
        encoded = iter(self._encode_words(texts))
        ids, char_start, char_end = [], [], []
        for word, word_pieces in zip(words, pieces):
            word_ids = next(encoded)
            piece_ids = [next(encoded) for _ in word_pieces or ()]
            if word_pieces and sum(piece_ids, []) == word_ids:
                spans = [(word.start() + piece.start(), word.start() + piece.end()) for piece in word_pieces]
            else:  # one piece, or cutting at punctuation changed the ids (SentencePiece, BPE merges): the whole word
                piece_ids, spans = [word_ids], [word.span()]
            for token_ids, (start, end) in zip(piece_ids, spans):
                ids += token_ids
                char_start += [start] * len(token_ids)
                char_end += [end] * len(token_ids)
        return np.array(ids, np.int32), np.array(char_start, np.int32), np.array(char_end, np.int32)

    def examples(self, records: Sequence, index: int, rng: np.random.Generator) -> list[dict]:
        question, context, start_char, answer = records[index]
        start_char = int(start_char)
        end_char = start_char + len(answer)
        if not answer:
            raise ValueError(f"record {index}: the answer is empty (SQuAD v1.1 answers every question)")
        if context[start_char:end_char] != answer:
            raise ValueError(f"record {index}: the answer {answer!r} is not at character {start_char} of its context")
        context_ids, char_start, char_end = self.context_tokens(context)  # [context tokens] each
        # the answer's tokens: those whose characters overlap [start_char, end_char)
        overlapping = np.flatnonzero((char_end > start_char) & (char_start < end_char))
        budget = self.max_length - self.tokenizer.num_special_tokens(pair=True)
        question_ids = self.tokenizer.encode_plain([question])[0][: budget // 2]
        room = budget - len(question_ids)
        if len(context_ids) > room and self.doc_stride >= room:
            raise ValueError(f"record {index}: doc_stride={self.doc_stride} is not below the {room} context tokens "
                             f"a window holds after its question: lower data.doc_stride or raise max_length")
        offset = len(self.tokenizer.prefix) + len(question_ids) + len(self.tokenizer.middle)
        rows, window_start = [], 0
        while True:
            window_end = min(window_start + room, len(context_ids))
            ids, token_types = self.tokenizer.build_pair(question_ids, context_ids[window_start:window_end].tolist())
            start = end = 0
            if len(overlapping) and window_start <= overlapping[0] and overlapping[-1] < window_end:
                start, end = offset + overlapping[0] - window_start, offset + overlapping[-1] - window_start
            context_place = slice(offset, offset + window_end - window_start)
            row_char_start = np.full(self.max_length, -1, np.int32)  # [max_length]
            row_char_end = np.full(self.max_length, -1, np.int32)
            row_char_start[context_place] = char_start[window_start:window_end]
            row_char_end[context_place] = char_end[window_start:window_end]
            pad = self.max_length - len(ids)
            rows.append({"input_ids": ids + [self.pad_id] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
                         "token_type_ids": token_types + [0] * pad, "start_positions": start,
                         "end_positions": end, "example_index": index, "token_char_start": row_char_start,
                         "token_char_end": row_char_end})
            if window_end == len(context_ids):
                return rows
            window_start += room - self.doc_stride



def stack(examples: list[dict]) -> Batch:
    """The examples' fields stacked: ids, masks and class labels as int32, real values (regression labels) float32."""
    stacked = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}
    return {key: v.astype(np.float32 if np.issubdtype(v.dtype, np.floating) else np.int32)
            for key, v in stacked.items()}


class Batches:
    """An iterator of fixed-shape NumPy batches from a random-access corpus, sharded by host and resumable: a grain
    pipeline whose stages are zoo's example builders.

    Args:
      documents: a random-access source (list of documents, `TfdsDocuments`, or a list of (source, target) pairs for
        `Seq2SeqRecipe`); recipes that read token ids wrap it in `TokenizedDocuments`.
      recipe: a `Recipe` (`SentencePairRecipe`, `CausalLMRecipe`, `Seq2SeqRecipe`, ...).
      batch_size: the global batch size; this host yields `batch_size // process_count` rows.
      seed: fixes the document order, the examples and the masking.
      num_epochs: None iterates forever.
      process_index, process_count: this host and how many there are (default: `jax.process_index()` and
        `jax.process_count()`).
      shard: "documents" or "rows", see the module docstring.
      shuffle_window: permutes the examples in windows of this many consecutive examples (grain's window shuffle,
        seeded), so a batch mixes many documents, as BERT's shuffled instances do; 1 keeps each document's examples
        together. Not used by packing recipes, whose rows already mix documents.
      workers: processes that build the batches (grain's `mp_prefetch`; each reads every `workers`-th document of
        this host's order); 0 builds them in this process. The batches depend on it, as grain says of
        `mp_prefetch` with packing, so a state resumes only with the same count.
      keep_remainder: a finite pass ends with its last, smaller batch instead of dropping it (an eval scores every
        example; the eval loop pads that batch to the step's shape). Training drops it: every step has one shape.
    Raises:
      ValueError: an empty corpus, a batch size that does not divide among hosts, a corpus that makes no example,
        or a finite pass too small for one batch.
    """

    def __init__(self, documents: Sequence, recipe: "Recipe", *, batch_size: int, seed: int = 0,
                 shuffle: bool = True, num_epochs: Optional[int] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None, shard: str = "documents", shuffle_window: int = 1,
                 workers: int = 0, keep_remainder: bool = False):
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window={shuffle_window} must be at least 1 (1: no cross-document shuffle)")
        if workers < 0:
            raise ValueError(f"workers={workers} must be 0 (build batches in this process) or more")
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of process_count={process_count}")
        if shard not in ("documents", "rows"):
            raise ValueError(f"shard must be 'documents' or 'rows', got {shard!r}")
        if keep_remainder and shard == "rows":
            raise ValueError("keep_remainder with shard='rows': every host slices the same global batch, and a "
                             "smaller last one would leave some hosts fewer rows or none; use shard='documents'")
        check_not_empty(documents, "the corpus")
        self.keep_remainder = keep_remainder
        self.recipe, self.shard, self.shuffle_window, self.workers = recipe, shard, int(shuffle_window), int(workers)
        wrap = recipe.tokenizes_documents and not isinstance(documents, TokenizedDocuments)
        self.documents = TokenizedDocuments(documents, recipe.tokenizer) if wrap else documents
        self.rows_per_host = batch_size // process_count
        self.rows_read = batch_size if shard == "rows" else self.rows_per_host
        self.seed, self.shuffle, self.num_epochs = int(seed), shuffle, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self._start()

    def _start(self, *, from_first_epoch: bool = True) -> None:
        self._iterator = iter(self.dataset(from_first_epoch=from_first_epoch))
        self._batches = 0  # since the start or the last set_state: a finite pass that makes none is an error

    def dataset(self, *, from_first_epoch: bool = True) -> grain.IterDataset:
        """This host's batches as a grain dataset: documents (an order per epoch) -> examples -> batches.

        `from_first_epoch`: the iterator starts at the first epoch (not a resumed state), so its builders count the
        rows of that epoch and fail at the second if one epoch cannot fill a batch (batches would then repeat the
        same few examples)."""
        count = len(self.documents)
        order = grain.MapDataset.range(count)
        if self.shuffle:
            order = order.shuffle(seed=self.seed % 2**32)  # grain reseeds it each epoch
        # (epoch, document) of every position; each host then takes every process_count-th position
        visits = order.repeat(self.num_epochs).map_with_index(lambda position, index: (position // count, index))
        if self.shard == "documents":
            visits = visits[self.process_index::self.process_count]
        build = _DocumentExamples(self.recipe, self.documents, self.seed,
                                  rows_per_batch=self.rows_read if from_first_epoch else 0)
        # The visits are indices in memory: no reader threads (grain's advice for in-memory data), whose prefetch
        # polling took a quarter of a demo batch's time on 2 cores.
        visits = visits.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        examples = self.recipe.pack(grain.experimental.FlatMapIterDataset(visits, build))
        if self.shuffle_window > 1:
            examples = grain.experimental.WindowShuffleIterDataset(examples, window_size=self.shuffle_window,
                                                                   seed=self.seed % 2**32)
        batches = examples.batch(self.rows_read, drop_remainder=not self.keep_remainder, batch_fn=stack)
        if self.shard == "rows":
            first = self.process_index * self.rows_per_host
            batches = batches.map(lambda batch: {key: value[first:first + self.rows_per_host]
                                                 for key, value in batch.items()})
        if self.workers:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags: their defaults, outside an absl app
                flags.FLAGS.mark_as_parsed()
            batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
        return batches

    # -- state -------------------------------------------------------------------------------------------------------
    @property
    def _state_process_count(self) -> int:
        return 0 if self.shard == "rows" else self.process_count  # "rows" states fit any host count

    def get_state(self) -> dict[str, Any]:
        """Where this host stands (grain's iterator state, with the seed and the host and worker counts it holds
        for), JSON-serializable: save it with the model's checkpoint."""
        return {"seed": self.seed, "process_count": self._state_process_count, "workers": self.workers,
                "pipeline": self._iterator.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from `state` (from `get_state`): the next batch is the one that would have come next."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"iterator state lacks {missing}; expected the dict of get_state() (keys "
                             f"{list(STATE_KEYS)})")
        if int(state["process_count"]) != self._state_process_count:
            raise ValueError(f"the state was saved with process_count={state['process_count']} (0: shard='rows'), "
                             f"but this run has {self._state_process_count}; the document shards would differ")
        if int(state["workers"]) != self.workers:
            raise ValueError(f"the state was saved with workers={state['workers']} but this run has "
                             f"workers={self.workers}; each worker reads its own documents, so set data.workers="
                             f"{state['workers']} to resume")
        self.seed = int(state["seed"])
        self._start(from_first_epoch=False)
        self._iterator.set_state(state["pipeline"])

    # -- iteration ---------------------------------------------------------------------------------------------------
    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> Batch:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self._batches == 0:
                raise ValueError(f"{self.num_epochs} epoch(s) of this host's share of the corpus make fewer examples "
                                 f"than the {self.rows_read} rows of one batch") from None
            raise
        self._batches += 1
        return batch


class _DocumentExamples(grain.experimental.FlatMapTransform):
    """(epoch, document index) -> the recipe's examples of that document, from a generator seeded by (seed, epoch,
    document): the same examples on any host, in any worker, after any resume."""

    max_fan_out = 1 << 16

    def __init__(self, recipe: "Recipe", documents: Sequence, seed: int, *, rows_per_batch: int = 0):
        self.recipe, self.documents, self.seed = recipe, documents, seed
        self.barren_visits = 0  # documents in a row that made no example: a whole epoch of them is an error
        # the rows the first epoch made here (this host's share, this worker's part of it); 0: not counted (resumed)
        self.rows_per_batch, self.first_epoch_rows = rows_per_batch, 0.0

    def flat_map(self, visit: tuple[int, int]) -> list:
        epoch, index = visit
        if epoch > 0 and self.rows_per_batch and self.first_epoch_rows < self.rows_per_batch:
            raise ValueError(f"one epoch of this host's share of the corpus makes {int(self.first_epoch_rows)} rows "
                             f"(in this worker, with data.workers), fewer than the {self.rows_per_batch} rows of one "
                             f"batch: use more documents or a smaller batch")
        examples = self.recipe.examples(self.documents, int(index),
                                        np.random.default_rng([self.seed, 0, epoch, int(index)]))
        if epoch == 0:
            self.first_epoch_rows += self.recipe.rows_made(examples)
        self.barren_visits = 0 if examples else self.barren_visits + 1
        if self.barren_visits > len(self.documents):
            raise ValueError(f"no document of the corpus ({len(self.documents)} documents) makes an example for "
                             f"{type(self.recipe).__name__}: are they empty, or all too short?")
        return examples


def bert_pretraining_batches(documents: Sequence, tokenizer, *, batch_size: int, max_length: int = 128,
                             objective: str = "nsp", seed: int = 0, **options) -> Batches:
    """BERT (MLM + NSP) batches; `objective="sop"` gives ALBERT's (MLM + SOP). `options`: masking and `Batches`."""
    loader_keys = ("shuffle", "num_epochs", "process_index", "process_count", "shard", "shuffle_window", "workers",
                   "keep_remainder")
    loader_options = {k: options.pop(k) for k in loader_keys if k in options}
    recipe = SentencePairRecipe(tokenizer, max_length, objective=objective, **options)
    return Batches(documents, recipe, batch_size=batch_size, seed=seed, **loader_options)


def albert_pretraining_batches(documents: Sequence, tokenizer, **options) -> Batches:
    """ALBERT (MLM + sentence-order prediction) batches; see `bert_pretraining_batches`."""
    return bert_pretraining_batches(documents, tokenizer, objective="sop", **options)


def causal_lm_batches(documents: Sequence, tokenizer, *, batch_size: int, max_length: int = 128, seed: int = 0,
                      eos_id: Optional[int] = None, **options) -> Batches:
    """GPT batches: packed rows with `segment_ids`, per-document `position_ids` and next-token `labels`."""
    recipe = CausalLMRecipe(tokenizer, max_length, eos_id=eos_id)
    return Batches(documents, recipe, batch_size=batch_size, seed=seed, **options)


def seq2seq_batches(pairs: Sequence[tuple[str, str]], tokenizer, *, batch_size: int, max_source_length: int = 64,
                    max_target_length: Optional[int] = None, target_tokenizer=None, seed: int = 0,
                    **options) -> Batches:
    """Encoder-decoder batches from (source, target) text pairs; `tokenizer` may be `TranslationTokenizers`."""
    source_tokenizer = getattr(tokenizer, "source", tokenizer)
    target_tokenizer = target_tokenizer or getattr(tokenizer, "target", tokenizer)
    recipe = Seq2SeqRecipe(source_tokenizer, max_source_length, max_target_length, target_tokenizer=target_tokenizer)
    return Batches(pairs, recipe, batch_size=batch_size, seed=seed, **options)


def text_infilling_batches(documents: Sequence, tokenizer, *, batch_size: int, max_length: int = 128, seed: int = 0,
                           mask_ratio: float = 0.3, poisson_lambda: float = 3.0, **options) -> Batches:
    """BART's denoising batches (see `TextInfillingRecipe`): encoder-decoder inputs and the original as `labels`."""
    recipe = TextInfillingRecipe(tokenizer, max_length, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda)
    return Batches(documents, recipe, batch_size=batch_size, seed=seed, **options)


def span_corruption_batches(documents: Sequence, tokenizer, *, batch_size: int, max_length: int = 128,
                            max_target_length: Optional[int] = None, seed: int = 0,
                            sentinel_ids: Optional[Sequence[int]] = None, **options) -> Batches:
    """T5 pre-training batches: span-corrupted documents as encoder-decoder rows (see `SpanCorruptionRecipe`)."""
    recipe = SpanCorruptionRecipe(tokenizer, max_length, max_target_length, sentinel_ids=sentinel_ids)
    return Batches(documents, recipe, batch_size=batch_size, seed=seed, **options)


def classification_batches(records: Sequence, tokenizer, *, batch_size: int, max_length: int = 128, seed: int = 0,
                           **options) -> Batches:
    """Sequence-classification batches (GLUE) from (text, label) or (text_a, text_b, label) records."""
    return Batches(records, ClassificationRecipe(tokenizer, max_length), batch_size=batch_size, seed=seed, **options)


def tagging_batches(records: Sequence, tokenizer, *, batch_size: int, max_length: int = 128, seed: int = 0,
                    **options) -> Batches:
    """Token-classification batches (CoNLL NER) from (words, tags) records: a tag on each word's first sub-word,
    -100 elsewhere (see `TaggingRecipe`)."""
    return Batches(records, TaggingRecipe(tokenizer, max_length), batch_size=batch_size, seed=seed, **options)


def question_answering_batches(records: Sequence, tokenizer, *, batch_size: int, max_length: int = 384,
                               doc_stride: int = 128, seed: int = 0, **options) -> Batches:
    """Span QA batches (SQuAD) from (question, context, answer_start, answer_text) records: one row per window of
    each context, windows sharing `doc_stride` tokens (see `SpanQARecipe`)."""
    return Batches(records, SpanQARecipe(tokenizer, max_length, doc_stride=doc_stride), batch_size=batch_size,
                   seed=seed, **options)


__all__ = ["Batches", "CausalLMRecipe", "Recipe", "ClassificationRecipe", "IGNORE_INDEX", "Seq2SeqRecipe",
           "SentencePairRecipe",
           "TokenizedDocuments", "albert_pretraining_batches", "bert_pretraining_batches", "causal_lm_batches",
           "classification_batches", "end_of_text_id", "question_answering_batches", "seq2seq_batches", "SpanQARecipe",
           "TaggingRecipe", "tagging_batches"]
