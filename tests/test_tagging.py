"""Token classification: the tagging rows (a tag on each word's first sub-word), the shipped code-spans task, the
tfds tag names, and a tiny run whose entity F1 is that of its own predictions."""

import numpy as np
import pytest

from tests.test_tokenizers import write_roberta_files
from tests.train_helpers import tiny_config
from train.benchmarks import IGNORED, entity_scores, entity_spans, get_metric
from train.data import CODE_SPANS_LABELS, TaggingRecipe, code_spans_records, corpus, shipped_tokenizer, tagging_batches
from zoo import tokenizers as zt

TINY_STEPS = 400  # fewer leave every word O, and the F1 check below would read 0 == 0
WORDS = ["The", "phased-in", "incompatible", "changes", "of", "CPython"]
TAGS = [0, 1, 2, 2, 0, 1]


@pytest.fixture(scope="module")
def wordpiece():
    return shipped_tokenizer()


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta")
    write_roberta_files(folder)
    return zt.from_pretrained(folder)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    folder = tmp_path_factory.mktemp("albert")
    zt.train_sentencepiece(corpus.read_corpus_text().splitlines()[:2000], folder / "spiece", vocab_size=600,
                           character_coverage=1.0)
    return zt.from_pretrained(folder)


def tagging_row(tokenizer, words, tags, max_length=32):
    return TaggingRecipe(tokenizer, max_length).examples([(words, tags)], 0, np.random.default_rng(0))[0]


def word_pieces(tokenizer, words):
    """Each word's ids, tokenized as in the sentence: with the space before it after the first."""
    return tokenizer.encode_plain([w if k == 0 else " " + w for k, w in enumerate(words)])


def test_each_words_tag_is_on_its_first_sub_word_and_the_rest_is_ignored(wordpiece):
    pieces = word_pieces(wordpiece, WORDS)
    assert max(map(len, pieces)) > 1  # some words are several sub-words, or the test checks nothing
    row = tagging_row(wordpiece, WORDS, TAGS)
    expected = [IGNORED]  # [CLS]
    for ids, tag in zip(pieces, TAGS):
        expected += [tag] + [IGNORED] * (len(ids) - 1)
    expected += [IGNORED] * (32 - len(expected))  # [SEP] and the padding
    assert row["labels"] == expected
    length = 2 + sum(map(len, pieces))
    assert row["input_ids"][:length] == [wordpiece.cls_id, *sum(pieces, []), wordpiece.sep_id]
    assert row["input_ids"][length:] == [wordpiece.pad_id] * (32 - length)
    assert row["attention_mask"] == [1] * length + [0] * (32 - length)
    assert row["token_type_ids"] == [0] * 32


@pytest.mark.parametrize("name", ["wordpiece", "roberta", "sentencepiece"])
def test_words_tokenized_alone_give_the_ids_of_the_sentence_with_its_specials(name, request):
    tokenizer = request.getfixturevalue(name)
    row = tagging_row(tokenizer, WORDS, TAGS, max_length=64)
    sentence = tokenizer.encode(" ".join(WORDS))  # the single-sequence template: [CLS] A [SEP] or <s> A </s>
    assert row["input_ids"][:len(sentence)] == sentence
    assert sum(label != IGNORED for label in row["labels"]) == len(WORDS)
    assert ("token_type_ids" in row) == (name != "roberta")  # RoBERTa's models take none, BERT's and ALBERT's do


def test_byte_level_words_after_the_first_keep_their_leading_space(roberta):
    row = tagging_row(roberta, ["the", "quick", "fox"], [0, 1, 2])
    first_subwords = [roberta.id_to_token(i) for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORED]
    assert first_subwords == ["t", "Ġquick", "Ġfox"]


def test_a_row_longer_than_max_length_keeps_the_words_that_fit_whole(wordpiece):
    pieces = word_pieces(wordpiece, WORDS)
    # room for the first two words and part of the third: the third and those after it are dropped
    max_length = 2 + len(pieces[0]) + len(pieces[1]) + len(pieces[2]) - 1
    row = tagging_row(wordpiece, WORDS, TAGS, max_length=max_length)
    kept = len(pieces[0]) + len(pieces[1])
    assert row["input_ids"][:kept + 2] == [wordpiece.cls_id, *pieces[0], *pieces[1], wordpiece.sep_id]
    assert [label for label in row["labels"] if label != IGNORED] == TAGS[:2]
    assert len(row["input_ids"]) == len(row["labels"]) == max_length


def test_a_record_with_a_tag_count_unlike_its_word_count_is_an_error(wordpiece):
    with pytest.raises(ValueError, match="record 0: 6 words but 5 tags"):
        tagging_row(wordpiece, WORDS, TAGS[:5])


def test_each_run_of_code_words_is_one_entity_and_prose_is_outside():
    words = "Call os.path.join(a, b) or __init__ self.x=None and key=None, e.g. len() (see below)".split()
    tags = corpus.code_span_tags(words)
    spans = entity_spans([CODE_SPANS_LABELS[t] for t in tags])
    # "b)" and "(see" are not code; "e.g." is not a dotted name
    assert spans == {("CODE", 1, 1), ("CODE", 4, 5), ("CODE", 7, 7), ("CODE", 9, 9)}
    assert tags == [0, 1, 0, 0, 1, 2, 0, 1, 0, 1, 0, 0]


def test_code_spans_records_are_the_corpus_sentences_with_their_tags():
    assert CODE_SPANS_LABELS == ("O", "B-CODE", "I-CODE")
    for split in ("train", "validation"):
        sentences = [s.split() for s in corpus.corpus_split(split) if 6 <= len(s.split()) <= 40]
        records = code_spans_records(split)
        assert [words for words, _ in records] == sentences
        assert all(tags == corpus.code_span_tags(words) for words, tags in records)
        with_code = sum(any(tags) for _, tags in records) / len(records)
        assert 0.2 < with_code < 0.6, (split, with_code)  # a task, neither all O nor all code
    training = {" ".join(words) for words, _ in code_spans_records("train")}
    assert not training & set(corpus.corpus_split("validation"))


def test_tfds_tag_names_are_the_class_names_of_the_tag_feature(wordpiece):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("importlib_resources")
    import tensorflow_datasets.text.conll2003  # noqa: F401  (registers the dataset for the mock)
    from train.inputs import tagging_data, tagging_label_names

    c = tiny_config(task="token_classification")
    c.data.update({"source": "tfds", "tfds_name": "conll2003", "fields": ("tokens", "ner"), "max_length": 32})
    c.model_overrides.update({"num_labels": 9})
    with tfds.testing.mock_data(num_examples=16):
        names = tagging_label_names(c.data)
        records = tagging_data(c, wordpiece).train.documents  # TfdsRecords of (tokens, ner)
        words, tags = records[0]
        # the mock draws each sequence's length alone; conll2003's own records have a tag per token
        aligned = [(w[:len(t)], t[:len(w)]) for w, t in (records[i] for i in range(len(records)))]
        batch = next(tagging_batches(aligned, wordpiece, batch_size=8, max_length=32))
        misaligned = {f"record {i}: {len(w)} words but {len(t)} tags" for i, (w, t) in enumerate(
            records[i] for i in range(len(records))) if len(w) != len(t)}
        if misaligned:  # the first record of the shuffled order that has one names itself
            with pytest.raises(ValueError, match=r"record \d+: \d+ words but \d+ tags") as error:
                next(tagging_data(c, wordpiece).train)
            assert str(error.value).split(";")[0] in misaligned
        c.data.fields = ("tokens", "chunks", "ner")
        with pytest.raises(ValueError, match=r"data.fields=\('tokens', 'chunks', 'ner'\) must name two"):
            tagging_label_names(c.data)
        c.data.fields = ("ner", "tokens")
        with pytest.raises(ValueError, match="feature 'tokens' is a Sequence, not a sequence of class labels"):
            tagging_label_names(c.data)
    assert names == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    assert all(isinstance(w, str) for w in words) and all(isinstance(t, int) for t in tags)
    assert batch["labels"].shape == (8, 32)
    tagged = batch["labels"][batch["labels"] != IGNORED]
    assert tagged.size and tagged.min() >= 0 and tagged.max() < 9


def test_a_head_that_does_not_count_the_tags_is_an_error(wordpiece):
    from train.inputs import tagging_data

    c = tiny_config(task="token_classification")
    c.data.source = "code_spans"
    c.model_overrides.update({"num_labels": 2})
    with pytest.raises(ValueError, match=r"has 3 tags \(O, B-CODE, I-CODE\) but model_overrides.num_labels=2"):
        tagging_data(c, wordpiece)
    c.model_overrides.update({"num_labels": 3, "label_names": ("O", "B-PER", "I-PER")})
    with pytest.raises(ValueError, match=r"label_names=\('O', 'B-PER', 'I-PER'\) are not the tags of"):
        tagging_data(c, wordpiece)


@pytest.mark.slow  # about 20 s alone on 2 CPU cores: it trains until the tiny tagger finds code (TINY_STEPS)
def test_tiny_tagging_run_reports_the_entity_f1_of_its_own_predictions(tmp_path):
    from train.loop import create_model, train_and_evaluate
    from train.metrics import read_metrics
    from train.tasks import get_task, make_datasets, model_inputs

    c = tiny_config(task="token_classification", steps=TINY_STEPS, every_steps=TINY_STEPS)
    c.model_overrides.update({"num_labels": 3})
    c.train.update({"eval_every": TINY_STEPS, "batch_size": 32, "log_every": TINY_STEPS})
    c.optimizer.learning_rate = 1e-3
    c.schedule.warmup_steps = 40
    c.eval.metric = "tagging"
    c.checkpoint.update({"best_metric": "eval_entity_f1", "best_mode": "max", "keep": 1})
    c.data.update({"source": "code_spans", "max_length": 48, "eval_batches": 4})
    model, params = create_model(c)
    datasets = make_datasets(c, model)
    state, _ = train_and_evaluate(c, str(tmp_path), datasets.train, datasets.eval, model=model,
                                  initial_params=params, show_progress=False)
    (last,) = [row for row in read_metrics(str(tmp_path)) if "eval_loss" in row]
    predicted, true, kept_predictions, kept_labels = [], [], [], []
    for batch in datasets.eval():
        logits = model.apply({"params": state.params}, **model_inputs(get_task("token_classification"), batch)).logits
        for p_row, y_row in zip(np.asarray(logits).argmax(-1), batch["labels"]):
            kept = y_row != IGNORED
            predicted.append([CODE_SPANS_LABELS[i] for i in p_row[kept]])
            true.append([CODE_SPANS_LABELS[i] for i in y_row[kept]])
            kept_predictions.append(p_row[kept])
            kept_labels.append(y_row[kept])
    assert sum(len(entity_spans(p)) for p in predicted)  # the model predicts entities: the F1 below is not 0 == 0
    by_hand = entity_scores(predicted, true)
    for name in ("entity_precision", "entity_recall", "entity_f1"):
        assert last[f"eval_{name}"] == pytest.approx(by_hand[name], abs=1e-9), name
    token_accuracy = np.mean(np.concatenate(kept_predictions) == np.concatenate(kept_labels))
    assert last["eval_token_accuracy"] == pytest.approx(token_accuracy, abs=1e-9)



def test_the_tagging_metric_is_selected_by_name_with_the_datas_tag_names():
    c = tiny_config(task="token_classification")
    c.data.source = "code_spans"
    metric = get_metric("tagging", c)
    labels = np.array([[IGNORED, 0, 1, 2, 0, IGNORED]])
    predictions = np.array([[2, 0, 1, 2, 1, 1]])  # the code span found, and a spurious B-CODE
    scores = metric({"predictions": predictions}, {"labels": labels})
    assert scores == {"token_accuracy": 0.75, "token_precision": pytest.approx(2 / 3), "token_recall": 1.0,
                      "token_f1": pytest.approx(0.8), "entity_precision": 0.5, "entity_recall": 1.0,
                      "entity_f1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="eval metric 'tagging' needs the recipe's config"):
        get_metric("tagging")
