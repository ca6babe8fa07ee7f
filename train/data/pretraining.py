"""The pre-training recipes of the papers, as NumPy functions on token ids.

- `mask_tokens`: BERT's masked LM (15% of the non-special tokens; of those 80% [MASK], 10% a random token, 10% kept),
  optionally whole-word, with a cap on predictions per row. Vectorized over the batch; one seeded generator.
- `make_sentence_pairs`: BERT's next-sentence pairs (half the B segments from another document) or ALBERT's
  sentence-order pairs (half swapped), with segments filled up to the length as in `create_pretraining_data.py`.
- `pack_tokens`, `pack_documents`: GPT's causal LM rows, documents joined with EOS and packed (grain's
  concat-then-split) with segment ids and per-document positions so no token attends across documents.
- `make_seq2seq_example`: source/target pairs; decoder inputs are the targets shifted right.
- `text_infilling`: BART's noise (Poisson(3) spans over 30% of the tokens, each replaced by one mask token).


- `random_spans_noise_mask`, `span_corruption`: T5's span corruption (15% of the tokens in spans of mean length 3;
  each dropped span a sentinel in the input, the target the sentinels followed by their spans).

Label convention: every label array holds the target id where there is one and `IGNORE_INDEX` (-100, as in
`transformers`) where nothing is predicted.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Optional, Sequence

import grain
import numpy as np

IGNORE_INDEX = -100


def maskable_positions(input_ids: np.ndarray, special_ids: Iterable[int]) -> np.ndarray:
    """True where a token may be chosen for masking: not a special token and not padding (padding is special)."""
    return ~np.isin(input_ids, np.fromiter(special_ids, np.int64))


def mask_tokens(input_ids: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, *, mask_id: int,
                random_token_ids: np.ndarray, mask_rate: float = 0.15, mask_token_rate: float = 0.8,
                random_token_rate: float = 0.1, max_predictions: Optional[int] = None,
                word_starts: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of a batch.

    In each row, max(1, round(mask_rate * maskable tokens)) positions (at most `max_predictions`) are chosen at
    random; a chosen token becomes `mask_id` with probability `mask_token_rate`, a token drawn uniformly from
    `random_token_ids` with probability `random_token_rate`, and stays as it is otherwise. With `word_starts` (True
    where a token begins a word), whole words are chosen (in random order while they fit the row's count), each of
    their tokens corrupted independently, as in BERT's whole-word masking.

    Args:
      input_ids: [batch, length] int.
      maskable: [batch, length] bool, False at special tokens and padding (see `maskable_positions`).
      rng: the generator; the same state gives the same masks.
    Returns:
      (masked input_ids, mlm_labels): labels hold the original id at chosen positions and -100 elsewhere.
    """
    input_ids = np.asarray(input_ids)
    maskable = np.asarray(maskable, bool)
    batch, length = input_ids.shape
    rows = np.arange(batch)[:, None]
    count = maskable.sum(axis=1)
    num_to_predict = np.where(count > 0, np.maximum(1, np.rint(count * mask_rate)), 0).astype(np.int64)
    if max_predictions is not None:
        num_to_predict = np.minimum(num_to_predict, max_predictions)

    # A word is a run of maskable tokens that starts at a word start (every maskable token without whole-word).
    if word_starts is None:
        starts = maskable
    else:
        after_maskable = np.pad(maskable[:, :-1], ((0, 0), (1, 0)))
        starts = maskable & (np.asarray(word_starts, bool) | ~after_maskable)
    word_of_token = np.where(maskable, np.cumsum(starts, axis=1) - 1, length)  # [batch, length]; `length`: none
    word_length = np.zeros((batch, length + 1), np.int64)
    np.add.at(word_length, (np.broadcast_to(rows, word_of_token.shape), word_of_token), 1)
    word_length = word_length[:, :length]
    # Visit words in random order and take them while the running token count fits the row's budget.
    scores = np.where(word_length > 0, rng.random((batch, length)), np.inf)
    order = np.argsort(scores, axis=1)
    length_in_order = np.take_along_axis(word_length, order, axis=1)
    taken_in_order = (np.cumsum(length_in_order, axis=1) <= num_to_predict[:, None]) & (length_in_order > 0)
    word_chosen = np.zeros((batch, length + 1), bool)
    np.put_along_axis(word_chosen, order, taken_in_order, axis=1)
    chosen = word_chosen[rows, word_of_token] & maskable

    action = rng.random((batch, length))
    use_mask = chosen & (action < mask_token_rate)
    use_random = chosen & (action >= mask_token_rate) & (action < mask_token_rate + random_token_rate)
    random_tokens = np.asarray(random_token_ids)[rng.integers(0, len(random_token_ids), (batch, length))]
    masked = np.where(use_mask, mask_id, np.where(use_random, random_tokens, input_ids)).astype(input_ids.dtype)
    labels = np.where(chosen, input_ids, IGNORE_INDEX).astype(np.int32)
    return masked, labels


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: np.random.Generator) -> None:
    """BERT's `truncate_seq_pair`: drop tokens from the longer segment, at random from its front or back."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def make_sentence_pairs(document_index: int, get_document: Callable[[int], Sequence[Sequence[int]]],
                        num_documents: int, rng: np.random.Generator, *, max_num_tokens: int,
                        short_seq_prob: float = 0.1, objective: str = "nsp") -> list[tuple[list, list, int]]:
    """Segment pairs from one tokenized document, as BERT's (and ALBERT's) `create_instances_from_document`.

    Sentences are gathered until they fill a target length (`max_num_tokens`, or with probability
    `short_seq_prob` a random shorter one), then split at a random sentence into A and B.
    - objective "nsp": with probability 1/2 B is replaced by text from another document; label 1 = random B
      (NotNext), 0 = B follows A (the `transformers` convention).
    - objective "sop": B always follows A in the document; with probability 1/2 they are swapped; label 1 = swapped.
    One deviation from the reference code, so that the classes stay balanced: there a one-sentence chunk always
    takes a random B (about 58% random pairs when short sequences are drawn); here its sentence is cut at a random
    token into A and B instead (only a one-token chunk must take a random B).

    Args:
      get_document: index -> list of sentences, each a sequence of token ids.
      max_num_tokens: room for A + B (the max length minus the special tokens).
    Returns:
      [(tokens_a, tokens_b, label)], each with 1 <= len(a), 1 <= len(b), len(a) + len(b) <= max_num_tokens.
    """
    if objective not in ("nsp", "sop"):
        raise ValueError(f"objective must be 'nsp' or 'sop', got {objective!r}")
    if max_num_tokens < 2:
        raise ValueError(f"max_num_tokens={max_num_tokens} leaves no room for two segments")
    document = [list(s) for s in get_document(document_index) if len(s)]
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = int(rng.integers(2, max_num_tokens + 1))
    pairs, chunk, chunk_length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            one_token = len(chunk) == 1 and len(chunk[0]) < 2
            if (objective == "nsp" and rng.random() < 0.5) or one_token:
                is_random = True
            elif len(chunk) == 1:  # one sentence: A and B are its two parts, cut at a random token
                cut = int(rng.integers(1, len(chunk[0])))
                chunk, is_random = [chunk[0][:cut], chunk[0][cut:]], False
            else:
                is_random = False
            tokens_a = [t for s in chunk[:a_end] for t in s]
            if is_random:
                label = 1
                target_b_length = target_length - len(tokens_a)
                other = document_index
                for _ in range(10):
                    other = int(rng.integers(0, num_documents))
                    if other != document_index:
                        break
                other_document = [s for s in get_document(other) if len(s)] or [document[-1]]
                tokens_b = []
                for sentence in other_document[int(rng.integers(0, len(other_document))):]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                tokens_b = [t for s in chunk[a_end:] for t in s]
                label = 0
                if objective == "sop" and rng.random() < 0.5:
                    tokens_a, tokens_b, label = tokens_b, tokens_a, 1
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if tokens_a and tokens_b:
                pairs.append((tokens_a, tokens_b, label))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


def pack_tokens(documents: grain.IterDataset, length: int, *, pad_id: int = 0) -> grain.IterDataset:
    """Packs token arrays (each a document ending with EOS) into rows of `length` for causal LM.

    grain's concat-then-split packing: documents are joined and cut every `length` tokens, a document longer than the
    room left continuing in the next row, and the last partial row padded. A row holds `input_ids`, `segment_ids`
    (1, 2, ... per document piece in the row; 0 at padding), `position_ids` (restarting at 0 for each piece),
    `attention_mask`, and `labels`: the next token of the same document (carried across a row break), -100 at each
    document's EOS and at padding. Its iterator's state (where the cut stands) is grain's, so resume is exact.
    """
    def with_labels(tokens: np.ndarray) -> dict:
        tokens = np.asarray(tokens, np.int32)
        return {"input_ids": tokens, "labels": np.append(tokens[1:], np.int32(IGNORE_INDEX))}

    packed = grain.experimental.ConcatThenSplitIterDataset(documents.map(with_labels),
                                                           length_struct={"input_ids": length, "labels": length})
    return packed.map(functools.partial(_packed_row, pad_id=pad_id))


def _packed_row(packed: dict, *, pad_id: int) -> dict:
    segment_ids = packed["input_ids_segment_ids"].astype(np.int32)
    real = segment_ids > 0
    return {"input_ids": np.where(real, packed["input_ids"], pad_id).astype(np.int32),
            "attention_mask": real.astype(np.int32), "segment_ids": segment_ids,
            "position_ids": np.where(real, packed["input_ids_positions"], 0).astype(np.int32),
            "labels": np.where(real, packed["labels"], IGNORE_INDEX).astype(np.int32)}


def pack_documents(documents: Iterable[Sequence[int]], length: int, *, eos_id: int, pad_id: int = 0) -> dict:
    """Packs tokenized documents (each followed by `eos_id`) into [rows, length] arrays; see `pack_tokens`."""
    tokens = [np.append(np.asarray(d, np.int32), np.int32(eos_id)) for d in documents]
    rows = list(pack_tokens(grain.MapDataset.source(tokens).to_iter_dataset(), length, pad_id=pad_id))
    if not rows:
        raise ValueError("pack_documents got no tokens")
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def make_seq2seq_example(source: Sequence[int], target: Sequence[int], *, max_source_length: int,
                         max_target_length: int, eos_id: int, pad_id: int = 0,
                         decoder_start_id: Optional[int] = None, source_eos_id: Optional[int] = None) -> dict:
    """One padded source/target example: source + EOS; labels = target + EOS; decoder inputs = labels shifted right.

    The decoder starts from `decoder_start_id` (default `pad_id`, as Vaswani et al.'s and Marian's models do); the
    source ends with `source_eos_id` (default `eos_id`). Too-long texts are truncated so EOS always fits.
    """
    if max_source_length < 2 or max_target_length < 2:
        raise ValueError(f"max_source_length={max_source_length} and max_target_length={max_target_length} must "
                         f"leave room for a token and EOS")
    start = pad_id if decoder_start_id is None else decoder_start_id
    src = [*source[:max_source_length - 1], eos_id if source_eos_id is None else source_eos_id]
    tgt = [*target[:max_target_length - 1], eos_id]
    example = {
        "input_ids": np.full(max_source_length, pad_id, np.int32),
        "attention_mask": np.zeros(max_source_length, np.int32),
        "decoder_input_ids": np.full(max_target_length, pad_id, np.int32),
        "decoder_attention_mask": np.zeros(max_target_length, np.int32),
        "labels": np.full(max_target_length, IGNORE_INDEX, np.int32),
    }
    example["input_ids"][:len(src)] = src
    example["attention_mask"][:len(src)] = 1
    example["decoder_input_ids"][:len(tgt)] = [start, *tgt[:-1]]
    example["decoder_attention_mask"][:len(tgt)] = 1
    example["labels"][:len(tgt)] = tgt
    return example


def infilling_span_lengths(num_to_mask: int, rng: np.random.Generator, poisson_lambda: float = 3.0) -> np.ndarray:
    """BART's span lengths: drawn from Poisson(poisson_lambda) until they cover `num_to_mask` tokens, the last one cut
    so that they cover exactly that many; in random order. Lengths of 0 are kept: each inserts a mask token."""
    lengths: list[int] = []
    while sum(lengths) < num_to_mask:
        lengths.append(int(rng.poisson(poisson_lambda)))
    if lengths:
        lengths[-1] -= sum(lengths) - num_to_mask
    return rng.permutation(np.asarray(lengths, np.int64))


def text_infilling(tokens: Sequence[int], rng: np.random.Generator, *, mask_id: int, mask_ratio: float = 0.3,
                   poisson_lambda: float = 3.0) -> np.ndarray:
    """BART's text infilling (Lewis et al. 2019) of one sequence: spans covering round(mask_ratio * len(tokens))
    tokens, of lengths from `infilling_span_lengths`, each replaced by a single `mask_id`. The spans do not overlap
    and sit uniformly at random among the kept tokens; the model learns to restore the original, its target.
    [length] -> [length - masked + spans]"""
    tokens = np.asarray(tokens)
    lengths = infilling_span_lengths(int(round(mask_ratio * len(tokens))), rng, poisson_lambda)
    items = len(tokens) - int(lengths.sum()) + len(lengths)  # kept tokens and spans, in their order
    is_span = np.zeros(items, bool)
    is_span[rng.choice(items, len(lengths), replace=False)] = True
    covered = np.ones(items, np.int64)
    covered[is_span] = lengths
    first = np.cumsum(covered) - covered  # the first original token each item stands for
    return np.where(is_span, mask_id, tokens[np.minimum(first, len(tokens) - 1)]).astype(tokens.dtype)


def random_spans_noise_mask(length: int, rng: np.random.Generator, *, noise_density: float = 0.15,
                            mean_span_length: float = 3.0) -> np.ndarray:
    """[length] bool, True at the tokens T5's span corruption drops (Raffel et al. 2020, section 3.1.4): about
    `noise_density` of them, in round(noise / mean_span_length) spans alternating with kept spans, the first kept.

    Span lengths are a random segmentation of the noise (and of the kept tokens) into that many non-empty spans, as
    in T5's `random_spans_noise_mask`.
    """
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)

    def segment(num_items: int) -> np.ndarray:  # num_spans positive lengths that sum to num_items
        cuts = np.sort(rng.choice(np.arange(1, num_items), num_spans - 1, replace=False))
        return np.diff(np.concatenate([[0], cuts, [num_items]]))

    noise, kept = segment(num_noise), segment(length - num_noise)
    mask = np.zeros(length, bool)
    start = 0
    for keep, drop in zip(kept, noise):
        mask[start + keep:start + keep + drop] = True
        start += keep + drop
    return mask


def span_corruption(tokens: Sequence[int], noise_mask: np.ndarray, sentinel_ids: Sequence[int]) -> tuple[list, list]:
    """(input, target) of T5's span corruption: each dropped span becomes one sentinel in the input; the target is
    each sentinel followed by the span it replaced (T5: <extra_id_0> is the first sentinel). Needs as many sentinels
    as spans."""
    inputs, targets, span = [], [], -1
    for i, (token, dropped) in enumerate(zip(tokens, noise_mask)):
        if dropped and (i == 0 or not noise_mask[i - 1]):
            span += 1
            if span >= len(sentinel_ids):
                raise ValueError(f"{span + 1} noise spans but only {len(sentinel_ids)} sentinels")
            inputs.append(sentinel_ids[span])
            targets.append(sentinel_ids[span])
        (targets if dropped else inputs).append(token)
    return inputs, targets
