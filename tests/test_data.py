"""The data pipeline: the papers' recipes as statistics and invariants, resumption, host sharding, bad input."""

import inspect
import collections
import json
import logging

import numpy as np
import pytest

from train.data import (IGNORE_INDEX, TfdsDocuments, TfdsPairs, TfdsRecords, albert_pretraining_batches,
                        bert_pretraining_batches, causal_lm_batches, classification_batches, date_translation_pairs,
                        far_key_records, make_sentence_pairs, mask_tokens, maskable_positions, pack_documents,
                        read_jsonl, read_text_files, seq2seq_batches, shipped_documents, shipped_tokenizer,
                        text_infilling, text_infilling_batches, word_order_records)
from train.data.corpus import CORPUS_FILE, FAR_KEY_WORDS
from train.data.loader import span_corruption_batches

MASK, PAD, CLS, SEP = 4, 0, 3, 1
SPECIAL = (PAD, SEP, 2, CLS, MASK)


@pytest.fixture(scope="module")
def tokenizer():
    return shipped_tokenizer()


@pytest.fixture(scope="module")
def documents():
    return shipped_documents()[:120]


def random_batch(rng, batch=640, length=256):
    """Rows of [CLS] text [SEP] padding, with random lengths: about 100k maskable tokens."""
    ids = rng.integers(5, 1024, (batch, length))
    lengths = rng.integers(length // 2, length + 1, batch)
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[np.arange(length)[None, :] >= lengths[:, None]] = PAD
    return ids


def test_masking_chooses_15_percent_and_splits_them_80_10_10():
    rng = np.random.default_rng(0)
    ids = random_batch(rng)
    maskable = maskable_positions(ids, SPECIAL)
    assert maskable.sum() > 100_000
    masked, labels = mask_tokens(ids, maskable, rng, mask_id=MASK, random_token_ids=np.arange(5, 1024))
    chosen = labels != IGNORE_INDEX
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.002
    as_mask = (masked == MASK)[chosen].mean()
    kept = (masked == ids)[chosen].mean()
    replaced = ((masked != ids) & (masked != MASK))[chosen].mean()
    assert abs(as_mask - 0.8) < 0.01
    assert abs(replaced - 0.1 * (1 - 1 / 1019)) < 0.01  # a random token may be the original one
    assert abs(kept - 0.1) < 0.01
    np.testing.assert_array_equal(labels[chosen], ids[chosen])


def test_special_and_padding_tokens_are_never_masked():
    rng = np.random.default_rng(1)
    ids = random_batch(rng, 64, 128)
    maskable = maskable_positions(ids, SPECIAL)
    masked, labels = mask_tokens(ids, maskable, rng, mask_id=MASK, random_token_ids=np.arange(5, 1024),
                                 mask_rate=0.9)
    assert (labels[~maskable] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(masked[~maskable], ids[~maskable])


def test_each_row_predicts_round_15_percent_capped_by_max_predictions():
    rng = np.random.default_rng(2)
    ids = random_batch(rng, 64, 128)
    maskable = maskable_positions(ids, SPECIAL)
    _, labels = mask_tokens(ids, maskable, rng, mask_id=MASK, random_token_ids=np.arange(5, 1024))
    np.testing.assert_array_equal((labels != IGNORE_INDEX).sum(1), np.maximum(1, np.rint(maskable.sum(1) * 0.15)))
    _, labels = mask_tokens(ids, maskable, rng, mask_id=MASK, random_token_ids=np.arange(5, 1024), max_predictions=5)
    assert ((labels != IGNORE_INDEX).sum(1) == 5).all()


def test_whole_word_masking_chooses_every_piece_of_a_word_or_none():
    rng = np.random.default_rng(3)
    ids = random_batch(rng, 128, 128)
    maskable = maskable_positions(ids, SPECIAL)
    word_starts = rng.random(ids.shape) < 0.4  # words of 2.5 pieces on average
    _, labels = mask_tokens(ids, maskable, rng, mask_id=MASK, random_token_ids=np.arange(5, 1024),
                            word_starts=word_starts)
    chosen = labels != IGNORE_INDEX
    for row in range(ids.shape[0]):
        starts = maskable[row] & (word_starts[row] | ~np.pad(maskable[row, :-1], (1, 0)))
        words = np.split(np.flatnonzero(maskable[row]), np.flatnonzero(starts[maskable[row]])[1:])
        for word in words:
            assert chosen[row, word].all() or not chosen[row, word].any()
    fraction = chosen.sum() / maskable.sum()
    assert 0.12 < fraction <= 0.15 + 1e-3  # whole words are taken while they fit the row's 15%


def test_masking_is_reproducible_from_the_seed():
    ids = random_batch(np.random.default_rng(4), 8, 64)
    maskable = maskable_positions(ids, SPECIAL)
    run = lambda seed: mask_tokens(ids, maskable, np.random.default_rng(seed), mask_id=MASK,  # noqa: E731
                                   random_token_ids=np.arange(5, 1024))
    np.testing.assert_array_equal(run(7)[0], run(7)[0])
    assert (run(7)[0] != run(8)[0]).any()


def numbered_documents(count=200, sentences=20, seed=0):
    """Token id = document * 100000 + position in the document, so pairs reveal where their segments came from."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(count):
        lengths = rng.integers(3, 12, sentences)
        bounds = np.cumsum(lengths)
        tokens = d * 100_000 + np.arange(bounds[-1])
        docs.append(np.split(tokens, bounds[:-1]))
    return docs


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_sentence_pairs_are_half_positive_with_correct_labels(objective):
    docs = numbered_documents(count=400)
    rng = np.random.default_rng(0)
    pairs = [p for d in range(len(docs))
             for p in make_sentence_pairs(d, docs.__getitem__, len(docs), rng, max_num_tokens=61, objective=objective)]
    assert len(pairs) > 1000
    labels = np.array([label for _, _, label in pairs])
    assert abs(labels.mean() - 0.5) < 0.04
    for a, b, label in pairs:
        assert 1 <= len(a) and 1 <= len(b) and len(a) + len(b) <= 61
        a, b = np.array(a), np.array(b)
        same_document = (a // 100_000 == b[0] // 100_000).all() and (b // 100_000 == b[0] // 100_000).all()
        if label == 0:
            assert same_document and a.max() < b.min()  # B is the text that follows A
        elif objective == "nsp":
            assert not same_document
        else:
            assert b.max() < a.min()  # swapped


def test_short_sequence_probability_makes_shorter_pairs():
    docs = numbered_documents(60, sentences=40)
    lengths = {}
    for prob in (0.0, 1.0):
        rng = np.random.default_rng(0)
        pairs = [p for d in range(len(docs))
                 for p in make_sentence_pairs(d, docs.__getitem__, len(docs), rng, max_num_tokens=61,
                                              short_seq_prob=prob)]
        lengths[prob] = np.mean([len(a) + len(b) for a, b, _ in pairs])
    assert lengths[1.0] < 0.75 * lengths[0.0]
    assert lengths[0.0] > 0.8 * 61  # segments fill up to the max length


def test_packing_keeps_every_token_once_with_per_document_segments_and_positions():
    rng = np.random.default_rng(0)
    docs = [rng.integers(10, 1000, rng.integers(1, 90)) for _ in range(50)]
    eos = 1
    rows = pack_documents(docs, 64, eos_id=eos)
    real = rows["attention_mask"] > 0
    np.testing.assert_array_equal(rows["input_ids"][real], np.concatenate([np.append(d, eos) for d in docs]))
    assert real[:-1].all()  # only the last row is padded
    for ids, segments, positions, labels, mask in zip(rows["input_ids"], rows["segment_ids"], rows["position_ids"],
                                                       rows["labels"], real):
        n = mask.sum()
        assert (segments[n:] == 0).all() and (labels[n:] == IGNORE_INDEX).all()
        boundaries = np.flatnonzero(np.diff(segments[:n])) + 1
        assert (np.diff(segments[:n]) >= 0).all() and (np.diff(segments[:n]) <= 1).all() and segments[0] == 1
        assert (ids[boundaries - 1] == eos).all()  # a new segment starts after an EOS
        for piece in np.split(np.arange(n), boundaries):
            np.testing.assert_array_equal(positions[piece], np.arange(len(piece)))
            np.testing.assert_array_equal(labels[piece[:-1]], ids[piece[1:]])  # next token of the same document
            last = piece[-1]
            assert labels[last] == IGNORE_INDEX if ids[last] == eos else labels[last] != IGNORE_INDEX


def test_bert_and_albert_batches_have_fixed_shapes_and_the_model_keys(tokenizer, documents):
    for make in (bert_pretraining_batches, albert_pretraining_batches):
        batch = next(make(documents, tokenizer, batch_size=8, max_length=64, seed=0, process_count=1,
                          process_index=0))
        assert {k: v.shape for k, v in batch.items()} == {
            "input_ids": (8, 64), "attention_mask": (8, 64), "token_type_ids": (8, 64), "mlm_labels": (8, 64),
            "next_sentence_labels": (8,)}
        assert all(v.dtype == np.int32 for v in batch.values())
        assert (batch["input_ids"][:, 0] == tokenizer.cls_id).all()
        real = batch["attention_mask"] > 0
        assert (batch["mlm_labels"][~real] == IGNORE_INDEX).all()
        assert (batch["mlm_labels"] != IGNORE_INDEX).any(axis=1).all()


def test_batch_keys_are_the_model_arguments(tokenizer, documents):
    import jax

    import zoo

    pairs = date_translation_pairs(16)
    cases = [("bert-tiny", "pretraining", bert_pretraining_batches(documents, tokenizer, batch_size=2, max_length=32)),
             ("gpt-tiny", "causal_lm", causal_lm_batches(documents, tokenizer, batch_size=2, max_length=32)),
             ("transformer-tiny", "seq2seq", seq2seq_batches(pairs, tokenizer, batch_size=2, max_source_length=32))]
    for name, task, batches in cases:
        model = zoo.create(name, task=task)
        arguments = inspect.signature(type(model).__call__).parameters
        inputs = {k: v for k, v in next(batches).items() if k in arguments}
        assert set(next(batches)) - set(inputs) <= {"mlm_labels", "next_sentence_labels", "labels"}
        assert all(v.max() < model.config.vocab_size for k, v in inputs.items() if k.endswith("input_ids"))
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs))  # traces, compiles nothing
        out = jax.eval_shape(lambda v: model.apply(v, **inputs), variables)
        logits = out.prediction_logits if task == "pretraining" else out.logits
        assert logits.shape == (*inputs["input_ids" if task != "seq2seq" else "decoder_input_ids"].shape,
                                model.config.vocab_size)


def take(batches, n):
    return [next(batches) for _ in range(n)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("recipe", ["bert", "albert", "gpt", "seq2seq", "text_infilling", "t5"])
def test_resumed_iterator_continues_with_exactly_the_next_batch(recipe, tokenizer, documents):
    small = [d[:6] for d in documents[:12]]  # a few epochs within the batches taken, so epoch changes are resumed too
    make = {
        "bert": lambda **o: bert_pretraining_batches(small, tokenizer, batch_size=4, max_length=48, seed=3,
                                                     whole_word_masking=True, **o),
        "albert": lambda **o: albert_pretraining_batches(small, tokenizer, batch_size=4, max_length=48, seed=3, **o),
        "gpt": lambda **o: causal_lm_batches(small, tokenizer, batch_size=4, max_length=48, seed=3, **o),
        "seq2seq": lambda **o: seq2seq_batches(date_translation_pairs(20), tokenizer, batch_size=4,
                                               max_source_length=24, seed=3, **o),
        "text_infilling": lambda **o: text_infilling_batches(small, tokenizer, batch_size=4, max_length=48, seed=3,
                                                             **o),
        "t5": lambda **o: span_corruption_batches(small, tokenizer, batch_size=4, max_length=24, seed=3,
                                                  sentinel_ids=range(tokenizer.vocab_size - 1, 0, -1), **o),
    }[recipe]
    uninterrupted = make()
    expected = take(uninterrupted, 30)
    assert len(list(make(num_epochs=1))) < 30  # the 30 batches span epochs
    for stop in (1, 7, 19):
        first = make()
        take(first, stop)
        state = first.get_state()
        assert set(state) == {"seed", "process_count", "workers", "pipeline"}
        resumed = make()
        resumed.set_state(json.loads(json.dumps(state)))  # small enough to save as JSON with the checkpoint
        assert_same_batches(take(resumed, 30 - stop), expected[stop:])


def test_worker_processes_build_the_batches_and_resume_exactly(tokenizer, documents):
    """grain's mp_prefetch: the same batches from a fresh pipeline and after a resume, in 2 worker processes."""
    small = [d[:6] for d in documents[:40]]
    make = lambda: bert_pretraining_batches(small, tokenizer, batch_size=4, max_length=32, seed=1,  # noqa: E731
                                            workers=2)
    expected = take(make(), 8)
    first = make()
    take(first, 3)
    state = json.loads(json.dumps(first.get_state()))
    resumed = make()
    resumed.set_state(state)
    assert_same_batches(take(resumed, 5), expected[3:])
    in_process = bert_pretraining_batches(small, tokenizer, batch_size=4, max_length=32, seed=1)
    with pytest.raises(ValueError, match="workers=2"):
        in_process.set_state(state)
    # each worker reads every second document of the order: the rows are the in-process examples, interleaved
    rows = lambda batches: {tuple(r) for b in batches for r in b["input_ids"].tolist()}  # noqa: E731
    assert rows(expected) <= rows(take(in_process, 40))


def test_same_seed_same_batches_other_seed_other_batches(tokenizer, documents):
    make = lambda seed: bert_pretraining_batches(documents, tokenizer, batch_size=4, max_length=32,  # noqa: E731
                                                 seed=seed)
    assert_same_batches(take(make(5), 3), take(make(5), 3))
    assert (next(make(5))["input_ids"] != next(make(6))["input_ids"]).any()


def test_two_hosts_see_disjoint_data_whose_union_is_the_whole(tokenizer, documents):
    pairs = [(f"item {i}", str(i)) for i in range(64)]
    seen = []
    for host in range(2):
        batches = seq2seq_batches(pairs, tokenizer, batch_size=8, max_source_length=8, num_epochs=1,
                                  process_index=host, process_count=2)
        host_batches = list(batches)
        assert all(b["input_ids"].shape == (4, 8) for b in host_batches)
        seen.append([tuple(row) for b in host_batches for row in b["input_ids"]])
    assert not set(seen[0]) & set(seen[1])
    everything = [tuple(row) for b in seq2seq_batches(pairs, tokenizer, batch_size=64, max_source_length=8,
                                                      num_epochs=1, process_count=1, process_index=0)
                  for row in b["input_ids"]]
    assert sorted(seen[0] + seen[1]) == sorted(everything) and len(set(everything)) == 64
    # over 3 epochs (each a new order, split anew) every document is read 3 times in all, by one host or the other
    rows_of = [[tuple(row) for b in seq2seq_batches(pairs, tokenizer, batch_size=8, max_source_length=8, num_epochs=3,
                                                    process_index=host, process_count=2) for row in b["input_ids"]]
               for host in range(2)]
    assert len(rows_of[0]) == len(rows_of[1]) == 96
    assert collections.Counter(rows_of[0] + rows_of[1]) == collections.Counter(everything * 3)
    assert set(rows_of[0][:32]) != set(rows_of[0][32:64])  # another order in the second epoch


def test_row_sharding_gives_the_same_global_batches_on_any_number_of_hosts(tokenizer, documents):
    make = lambda count, index: bert_pretraining_batches(  # noqa: E731
        documents[:40], tokenizer, batch_size=8, max_length=32, seed=1, shard="rows", process_count=count,
        process_index=index)
    single = take(make(1, 0), 5)
    hosts = [take(make(4, h), 5) for h in range(4)]
    joined = [{k: np.concatenate([hosts[h][step][k] for h in range(4)]) for k in single[0]} for step in range(5)]
    assert_same_batches(joined, single)
    on_four = make(4, 2)
    take(on_four, 3)
    on_one = make(1, 0)
    on_one.set_state(on_four.get_state())  # a state saved on 4 hosts resumes on 1
    assert_same_batches(take(on_one, 2), single[3:])


def test_state_from_another_host_count_is_refused(tokenizer, documents):
    state = causal_lm_batches(documents, tokenizer, batch_size=4, process_count=1, process_index=0).get_state()
    other = causal_lm_batches(documents, tokenizer, batch_size=4, process_count=2, process_index=1)
    with pytest.raises(ValueError, match="process_count"):
        other.set_state(state)


def test_seq2seq_decoder_inputs_are_targets_shifted_right(tokenizer):
    pairs = date_translation_pairs(32, seed=1)
    assert pairs == date_translation_pairs(32, seed=1)
    batch = next(seq2seq_batches(pairs, tokenizer, batch_size=8, max_source_length=24, max_target_length=16))
    labels, decoder_inputs, mask = batch["labels"], batch["decoder_input_ids"], batch["decoder_attention_mask"]
    assert (decoder_inputs[:, 0] == tokenizer.pad_id).all()
    real = mask > 0
    np.testing.assert_array_equal(decoder_inputs[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])
    assert (labels[~real] == IGNORE_INDEX).all()
    ends = real.sum(1) - 1
    assert (labels[np.arange(8), ends] == tokenizer.sep_id).all()  # targets end with EOS ([SEP] here)
    targets = {tokenizer.decode(row[row >= 0]).replace(" ", "") for row in labels}
    assert targets <= {target for _, target in pairs}


def test_word_order_records_swap_two_words_of_half_the_sentences_and_split_by_document():
    train, validation = word_order_records("train"), word_order_records("validation")
    assert train == word_order_records("train") and train != word_order_records("train", seed=1)
    assert 0.45 < np.mean([label for _, label in train]) < 0.55
    assert len(validation) > 500 and not {text for text, _ in train} & {text for text, _ in validation}
    as_written = {tuple(s.split()) for document in shipped_documents() for s in document}
    by_words = {}
    for words in as_written:
        by_words.setdefault(tuple(sorted(words)), []).append(words)
    for text, label in train[:2000]:
        words = tuple(text.split())
        assert 6 <= len(words) <= 40
        if label == 1:
            assert words in as_written
        else:  # the same words as a sentence of the corpus, two of them in each other's place
            differences = [sum(a != b for a, b in zip(words, original)) for original in by_words[tuple(sorted(words))]]
            assert 2 in differences
    with pytest.raises(ValueError, match="split must be 'train' or 'validation'"):
        word_order_records("test")


def test_word_order_source_gives_classification_batches_and_held_out_eval_batches():
    import zoo
    from train.tasks import make_datasets
    from train.recipes import base_config

    config = base_config()
    config.task, config.train.batch_size = "sequence_classification", 8
    config.data.update(dict(source="word_order", max_length=32, eval_batches=2))
    datasets = make_datasets(config, zoo.create("bert-tiny", task="sequence_classification", num_labels=2))
    batch = next(datasets.train)
    assert {k: v.shape for k, v in batch.items()} == {"input_ids": (8, 32), "attention_mask": (8, 32),
                                                     "token_type_ids": (8, 32), "labels": (8,)}
    assert set(batch["labels"].tolist()) <= {0, 1}
    assert len(list(datasets.eval())) == 2
    config.data.source = "shipped"
    with pytest.raises(ValueError, match=r"data.source='shipped' is not one of tfds .* word_order"):
        make_datasets(config, zoo.create("bert-tiny", task="sequence_classification", num_labels=2))

def test_far_key_records_hold_their_classs_key_words_only_in_the_second_half_of_balanced_rows(tokenizer):
    records = far_key_records(40, seed=0, num_words=100, num_keys=3)
    assert records == far_key_records(40, seed=0, num_words=100, num_keys=3)
    assert records != far_key_records(40, seed=1, num_words=100, num_keys=3)
    assert [label for _, label in records].count(1) == 20
    keys = {word: label for label, words in enumerate(FAR_KEY_WORDS) for word in words}
    for text, label in records:
        words = text.split()
        assert len(words) == 100
        found = [(k, keys[word]) for k, word in enumerate(words) if word in keys]
        assert len(found) == 3 and all(k >= 50 and key_label == label for k, key_label in found)
        # one token a word: a row is [CLS], the words, [SEP], and the keys keep their distance from [CLS]
        assert len(tokenizer.encode_batch([text], max_length=128)["attention_mask"][0].nonzero()[0]) == 102


def test_far_key_source_fills_rows_of_max_length_tokens_and_holds_out_other_rows_for_eval():
    import zoo
    from train.tasks import make_datasets
    from train.recipes import base_config

    config = base_config()
    config.task, config.train.batch_size = "sequence_classification", 4
    config.data.update(dict(source="far_key", tokenizer="shipped", max_length=64, num_examples=16,
                            num_eval_examples=8, eval_batches=2))
    datasets = make_datasets(config, zoo.create("bert-tiny", task="sequence_classification", num_labels=2))
    train_batches = [next(datasets.train) for _ in range(4)]  # an epoch of the 16 training rows
    assert all(b["input_ids"].shape == (4, 64) and b["attention_mask"].all() for b in train_batches)
    train_rows = {tuple(row) for b in train_batches for row in b["input_ids"].tolist()}
    eval_rows = {tuple(row) for b in datasets.eval() for row in b["input_ids"].tolist()}
    assert len(train_rows) == 16 and len(eval_rows) == 8 and not train_rows & eval_rows


def test_shipped_corpus_and_vocabulary(tokenizer):
    docs = shipped_documents()
    assert len(docs) > 400 and sum(len(s) for d in docs for s in d) > 1_500_000
    assert CORPUS_FILE.stat().st_size < 5_000_000
    assert tokenizer.vocab_size == 1024
    ids = np.concatenate(tokenizer.encode_plain([s for d in docs[:50] for s in d]))
    assert (ids == tokenizer.unk_id).mean() < 0.01


def test_empty_corpus_and_too_small_max_length_fail_before_training(tokenizer, documents, tmp_path):
    with pytest.raises(ValueError, match="no documents"):
        bert_pretraining_batches([], tokenizer, batch_size=2)
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no documents"):
        read_text_files(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="max_length=4 is too small"):
        bert_pretraining_batches(documents, tokenizer, batch_size=2, max_length=4)
    with pytest.raises(ValueError, match="multiple of process_count"):
        causal_lm_batches(documents, tokenizer, batch_size=3, process_count=2, process_index=0)
    with pytest.raises(ValueError, match="fewer than"):
        next(causal_lm_batches(documents[:1], tokenizer, batch_size=4096, max_length=128))


def test_text_that_is_not_utf8_names_the_file_and_offset_or_is_skipped(tmp_path, caplog):
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("First sentence. Second one.\nThird line.\n\nAnother document.\n")
    bad.write_bytes(b"fine text\nthen caf\xe9\n")
    with pytest.raises(ValueError, match=r"b\.txt: not UTF-8 at byte offset 18"):
        read_text_files(tmp_path)
    with caplog.at_level(logging.WARNING):
        docs = read_text_files(tmp_path, on_decode_error="skip")
    assert "b.txt" in caplog.text
    assert docs == [["First sentence.", "Second one.", "Third line."], ["Another document."]]


def test_jsonl_documents_and_bad_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "One. Two."}\n{"text": "Three."}\n')
    assert read_jsonl(path) == [["One.", "Two."], ["Three."]]
    path.write_text('{"text": "One."}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"docs.jsonl:2: no string field 'text'"):
        read_jsonl(path)


def test_tfds_data_source_feeds_the_pipeline(tokenizer):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("importlib_resources")
    import tensorflow_datasets.text.glue  # noqa: F401  (registers the datasets for the mock)
    import tensorflow_datasets.translate.wmt14  # noqa: F401

    with tfds.testing.mock_data(num_examples=40):
        docs = TfdsDocuments("glue/sst2", split="train", text_field="sentence")
        assert len(docs) == 40 and all(isinstance(s, str) for s in docs[0])
        batch = next(causal_lm_batches(docs, tokenizer, batch_size=2, max_length=16))
        pairs = TfdsPairs("wmt14_translate/de-en", split="train", source_field="en", target_field="de")
        assert len(pairs) == 40 and all(isinstance(text, str) for text in pairs[0])
        translation = next(seq2seq_batches(pairs, tokenizer, batch_size=4, max_source_length=16))
        records = TfdsRecords("glue/sst2", split="train", fields=("sentence", "label"))
        assert isinstance(records[0][0], str) and isinstance(records[0][1], int)
        glue = next(classification_batches(records, tokenizer, batch_size=4, max_length=16))
    assert batch["input_ids"].shape == (2, 16)
    assert {k: v.shape for k, v in glue.items()} == {"input_ids": (4, 16), "attention_mask": (4, 16),
                                                    "token_type_ids": (4, 16), "labels": (4,)}
    assert translation["decoder_input_ids"].shape == (4, 16)


def test_span_qa_rows_point_at_the_answer_tokens_and_at_cls_when_cut_off():
    from train.data import question_answering_batches, shipped_tokenizer

    tokenizer = shipped_tokenizer()
    first = "The function returns a list of the values. It never fails."
    long = "x " * 200 + "the end"
    records = [("what does the function return?", first, first.index("a list"), "a list"),
               ("what never fails?", first, first.index("It"), "It"),
               ("who?", long, long.index("the end"), "the end")]
    batch = next(question_answering_batches(records, tokenizer, batch_size=3, max_length=64, doc_stride=16,
                                            shuffle=False))  # the third row: the long context's first window
    assert batch["input_ids"].shape == (3, 64) and batch["token_type_ids"].shape == (3, 64)
    spans = [tokenizer.decode(batch["input_ids"][i][batch["start_positions"][i]:batch["end_positions"][i] + 1])
             for i in range(3)]
    assert spans == ["a list", "it", ""]
    assert batch["start_positions"][2] == batch["end_positions"][2] == 0  # the answer was cut off: [CLS]
    assert batch["input_ids"][0][0] == tokenizer.cls_id
    assert all(batch["token_type_ids"][0][batch["start_positions"][0]:batch["end_positions"][0] + 1] == 1)


def test_span_qa_record_whose_answer_is_not_in_its_context_is_an_error():
    from train.data import question_answering_batches, shipped_tokenizer

    with pytest.raises(ValueError, match="record 0: the answer 'a tuple' is not at character 3 of its context"):
        next(question_answering_batches([("q?", "returns a list", 3, "a tuple")], shipped_tokenizer(), batch_size=1,
                                        max_length=32))


def test_text_infilling_masks_30_percent_in_poisson_3_spans_each_one_mask_token():
    from train.data.pretraining import infilling_span_lengths

    rng = np.random.default_rng(0)
    lengths = np.concatenate([infilling_span_lengths(10_000, rng)[1:] for _ in range(20)])  # [0]: perhaps cut
    assert abs(lengths.mean() - 3.0) < 0.05 and abs(lengths.var() - 3.0) < 0.1  # Poisson(3): mean = variance = 3
    assert abs(np.mean(lengths == 0) - np.exp(-3.0)) < 0.01  # a span of length 0 inserts a mask token
    tokens = np.arange(10, 110)  # increasing, so each kept token says where it came from
    for seed in range(200):
        rng = np.random.default_rng(seed)
        noised = text_infilling(tokens, rng, mask_id=MASK)
        kept = noised[noised != MASK]
        assert np.all(np.diff(kept) > 0) and set(kept) <= set(tokens)  # kept tokens in order, none changed
        assert len(tokens) - len(kept) == 30  # round(30% of 100) tokens masked
        masked = np.setdiff1d(tokens, kept)
        runs = np.sum(np.diff(masked) != 1) + 1 if len(masked) else 0  # maximal runs of masked tokens
        assert (noised == MASK).sum() >= runs  # every masked run lies under at least one mask token


def test_text_infilling_batches_restore_the_original_text(tokenizer, documents):
    batches = text_infilling_batches(documents[:40], tokenizer, batch_size=8, max_length=32, seed=0)
    batch = next(batches)
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels"}
    for row in range(8):
        target = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        source = batch["input_ids"][row][batch["attention_mask"][row] == 1]
        assert target[0] == CLS and target[-1] == SEP and source[0] == CLS and source[-1] == SEP
        assert MASK in source and MASK not in target
        kept = list(source[source != MASK])
        it = iter(target)
        assert all(token in it for token in kept)  # the source's kept tokens are the target's, in order
        decoder = batch["decoder_input_ids"][row][batch["decoder_attention_mask"][row] == 1]
        np.testing.assert_array_equal(decoder, [SEP, *target[:-1]])  # BART's decoder starts from </s>


def test_t5_span_corruption_has_the_papers_statistics_and_input_plus_target_rebuild_the_text():
    from train.data.pretraining import random_spans_noise_mask, span_corruption
    rng = np.random.default_rng(0)
    sentinels = [1000 - 1 - n for n in range(100)]  # <extra_id_n> from the end of the vocabulary
    densities, span_lengths = [], []
    for _ in range(200):
        tokens = list(rng.integers(0, 900, 200))
        mask = random_spans_noise_mask(len(tokens), rng, noise_density=0.15, mean_span_length=3.0)
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        densities.append(mask.mean())
        span_lengths.append(mask.sum() / len(starts))
        assert not mask[0]  # the first span is kept
        inputs, targets = span_corruption(tokens, mask, sentinels)
        assert len(inputs) == len(tokens) - mask.sum() + len(starts) and len(targets) == mask.sum() + len(starts)
        # rebuild: each sentinel of the input takes the tokens after the same sentinel in the target
        spans, current = {}, None
        for t in targets:
            if t in sentinels:
                current = spans.setdefault(t, [])
            else:
                current.append(t)
        rebuilt = [t for i in inputs for t in (spans[i] if i in sentinels else [i])]
        assert rebuilt == tokens
    assert abs(np.mean(densities) - 0.15) < 0.005 and abs(np.mean(span_lengths) - 3.0) < 0.1


def test_span_corruption_batches_hold_sentinels_in_source_and_target(documents):
    with_sentinels = shipped_tokenizer(extra_ids=100)  # sentinels outside the text's ids, as T5's vocabulary has
    sentinels = [with_sentinels.token_to_id(f"<extra_id_{n}>") for n in range(100)]
    batch = next(span_corruption_batches(documents, with_sentinels, batch_size=4, max_length=32, max_target_length=12))
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4, 12)
    for row, labels in zip(batch["input_ids"], batch["labels"]):
        assert row[0] not in sentinels and sentinels[0] in row and labels[0] == sentinels[0]
    shifted = batch["labels"][:, 1:] != IGNORE_INDEX  # the decoder reads the previous label
    np.testing.assert_array_equal(batch["decoder_input_ids"][:, 1:][shifted], batch["labels"][:, :-1][shifted])


def test_shipped_vocabulary_with_t5_sentinels_appended_feeds_the_span_corruption_task(documents, tmp_path):
    from train.recipes import load_recipe
    from train.loop import create_model
    from train.tasks import make_datasets

    with_sentinels = shipped_tokenizer(extra_ids=100)
    assert with_sentinels.vocab_size == 1124
    assert [with_sentinels.token_to_id(f"<extra_id_{n}>") for n in (0, 1, 99)] == [1123, 1122, 1024]  # as T5's
    text = "the list is sorted in place"
    assert with_sentinels.encode(text) == shipped_tokenizer().encode(text)
    assert with_sentinels.decode([with_sentinels.token_to_id("<extra_id_0>"), *with_sentinels.encode(text)]) == text
    with_sentinels.save(tmp_path / "tokenizer")  # the sentinels travel with the tokenizer's files
    from zoo import tokenizers
    assert tokenizers.from_pretrained(tmp_path / "tokenizer").token_to_id("<extra_id_0>") == 1123

    config = load_recipe("t5_tiny")
    config.train.batch_size = 4
    model, _ = create_model(config)
    batch = next(make_datasets(config, model).train)
    assert batch["input_ids"].shape == (4, 128) and batch["labels"].shape == (4, 32)
    assert batch["labels"][0, 0] == 1123 and 1123 in batch["input_ids"][0]  # <extra_id_0> opens the target
    config.data.tokenizer = str(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="data.extra_ids=100 appends sentinels to the shipped vocabulary"):
        make_datasets(config, model)


def test_shuffle_window_mixes_documents_in_a_batch_and_resumes_exactly_mid_window(tokenizer, documents):
    pairs = [(f"item {i}", str(i)) for i in range(64)]  # one example per document: a row names its document
    make = lambda window: seq2seq_batches(pairs, tokenizer, batch_size=8, max_source_length=8,  # noqa: E731
                                          shuffle=False, num_epochs=1, shuffle_window=window)
    document_of = {tuple(row): i for i, row in enumerate(np.concatenate(
        [b["input_ids"] for b in make(1)]).tolist())}
    first_batch = next(make(64))["input_ids"].tolist()
    assert sorted(document_of[tuple(row)] for row in first_batch) != list(range(8))  # not 8 consecutive documents

    small = [d[:6] for d in documents[:12]]
    bert = lambda: bert_pretraining_batches(small, tokenizer, batch_size=4, max_length=48, seed=3,  # noqa: E731
                                            shuffle_window=5)
    expected = take(bert(), 20)
    for stop in (1, 3, 11):  # mid-window, and across windows and epochs
        first = bert()
        take(first, stop)
        resumed = bert()
        resumed.set_state(json.loads(json.dumps(first.get_state())))
        assert_same_batches(take(resumed, 20 - stop), expected[stop:])


def test_shuffle_window_below_one_is_refused(tokenizer, documents):
    with pytest.raises(ValueError, match="shuffle_window"):
        bert_pretraining_batches(documents, tokenizer, batch_size=4, max_length=32, shuffle_window=0)


def test_keep_remainder_ends_a_pass_with_its_smaller_last_batch(tokenizer):
    """An eval pass scores every example: 21 records in batches of 8 are 8, 8 and 5 rows; training drops the 5."""
    records = [(f"sentence number {i}", i % 2) for i in range(21)]
    kept = list(classification_batches(records, tokenizer, batch_size=8, max_length=16, num_epochs=1, shuffle=False,
                                       keep_remainder=True))
    assert [len(b["labels"]) for b in kept] == [8, 8, 5]
    assert [int(x) for b in kept for x in b["labels"]] == [i % 2 for i in range(21)]
    dropped = list(classification_batches(records, tokenizer, batch_size=8, max_length=16, num_epochs=1,
                                          shuffle=False))
    assert [len(b["labels"]) for b in dropped] == [8, 8]
    few = list(classification_batches(records[:3], tokenizer, batch_size=8, max_length=16, num_epochs=1,
                                      keep_remainder=True))
    assert [len(b["labels"]) for b in few] == [3]  # fewer examples than a batch: one smaller batch, not an error
    with pytest.raises(ValueError, match="keep_remainder with shard='rows'"):
        classification_batches(records, tokenizer, batch_size=8, max_length=16, num_epochs=1, shard="rows",
                               keep_remainder=True)
