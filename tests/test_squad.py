"""SQuAD v1.1: the official exact match and F1, document-stride windows whose tokens map back to the original
characters, and predicted spans decoded into the original text."""

import numpy as np
import pytest

from train.data import SpanQARecipe, question_answering_batches, shipped_tokenizer
from train.squad import decode_answers, exact_match, f1, normalize_answer, squad_metric, squad_scores

# ~100 words, so the context needs several 48-token windows; the answer sits near its end
LONG_CONTEXT = ("Norman rule began in the tenth century, when the Duke of Normandy swore fealty to the king. "
                "The duchy grew rich on trade along the river, and its abbeys were famous for their schools. "
                "In the year 1066, Duke William crossed the sea with a large army and won the battle at Hastings. "
                "His sons fought one another for the crown, and the barons took sides in every quarrel. "
                "Much later, the island of Jersey remained loyal to the crown when the duchy itself was lost. "
                "The Answer, Here! is what scholars call the final clause of this long and winding story.")


@pytest.fixture(scope="module")
def tokenizer():
    return shipped_tokenizer()


@pytest.fixture(scope="module", params=["wordpiece", "byte_level_bpe", "sentencepiece"])
def any_tokenizer(request, tmp_path_factory):
    """The shipped WordPiece, and a byte-level BPE (GPT-2's, RoBERTa's) and a SentencePiece (ALBERT's) trained on the
    shipped corpus."""
    import zoo.tokenizers as zt
    from train.data import shipped_documents

    if request.param == "wordpiece":
        return shipped_tokenizer()
    lines = [sentence for document in shipped_documents()[:300] for sentence in document]
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "byte_level_bpe":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(lines, vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
        bpe.save_model(str(folder))
    else:
        zt.train_sentencepiece(lines, folder / "spiece", vocab_size=600, character_coverage=1.0)
    return zt.from_pretrained(folder)


# -- the official evaluation ----------------------------------------------------------------------------------
def test_normalize_answer_lowers_drops_punctuation_articles_and_extra_spaces():
    assert normalize_answer("The Cat!") == "cat"
    assert normalize_answer("  An  apple, a day.  ") == "apple day"
    assert normalize_answer("don't") == "dont"  # punctuation goes without leaving a space
    assert normalize_answer("Theater") == "theater"  # "the" only as a whole word


def test_exact_match_and_f1_on_hand_computed_cases():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("a cat", "the cats") == 0.0
    # [big, red, dog] vs [red, dog, barked]: 2 shared, precision = recall = 2/3
    assert f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # a repeated word counts as often as both have it: precision 1/2, recall 1
    assert f1("dog dog", "dog") == pytest.approx(2 / 3)
    # both normalize to nothing: the official script gives EM 1 but F1 0
    assert exact_match("the", "a") == 1.0 and f1("the", "a") == 0.0


def test_squad_scores_take_the_best_ground_truth_and_count_a_missing_prediction_as_zero():
    predictions = {0: "The Cat!", 1: "big red dog"}
    references = {0: ["dog", "cat"], 1: ["red dog barked", "the big dog"]}
    # 1: F1 2/3 against the first answer, 0.8 against the second ([big, dog]: precision 2/3, recall 1)
    assert squad_scores(predictions, references) == pytest.approx({"exact_match": 50.0, "f1": 90.0})
    with_missing = {**references, 2: ["anything"]}
    assert squad_scores(predictions, with_missing) == pytest.approx({"exact_match": 100 / 3, "f1": 60.0})


# -- document-stride windows ---------------------------------------------------------------------------------
def answer_record(question="What do scholars call the final clause?", answer="The Answer, Here"):
    return question, LONG_CONTEXT, LONG_CONTEXT.index(answer), answer


def context_part(row):
    """The window's context tokens: (positions, ids, first characters, end characters)."""
    positions = np.flatnonzero(np.asarray(row["token_char_start"]) >= 0)
    return (positions, np.asarray(row["input_ids"])[positions], np.asarray(row["token_char_start"])[positions],
            np.asarray(row["token_char_end"])[positions])


def test_long_context_becomes_windows_sharing_doc_stride_tokens_that_cover_it_in_order(tokenizer):
    record = answer_record()
    rows = SpanQARecipe(tokenizer, 48, doc_stride=12).examples([record], 0, None)
    assert len(rows) >= 4
    windows = [context_part(row) for row in rows]
    for (_, ids, starts, _), (_, next_ids, next_starts, _) in zip(windows, windows[1:]):
        assert list(ids[-12:]) == list(next_ids[:12]) and list(starts[-12:]) == list(next_starts[:12])
    # the windows, less what each shares with the one before, are the context's own tokens, in order
    ids = np.concatenate([windows[0][1]] + [w[1][12:] for w in windows[1:]])
    assert list(ids) == tokenizer.encode_plain([LONG_CONTEXT])[0]
    for row in rows:
        assert row["example_index"] == 0 and len(row["input_ids"]) == 48
        assert row["input_ids"][0] == tokenizer.cls_id
        positions = context_part(row)[0]
        assert all(np.asarray(row["token_type_ids"])[positions] == 1)  # the context is segment B


def test_every_context_token_maps_back_to_the_characters_it_came_from(tokenizer):
    rows = SpanQARecipe(tokenizer, 48, doc_stride=12).examples([answer_record()], 0, None)
    for row in rows:
        _, ids, starts, ends = context_part(row)
        # tokens of one piece share its characters: the piece's text tokenizes to exactly those tokens
        cuts = [0] + [k for k in range(1, len(ids)) if (starts[k], ends[k]) != (starts[k - 1], ends[k - 1])]
        for begin, stop in zip(cuts, cuts[1:] + [len(ids)]):
            if begin == 0 and row is not rows[0]:
                continue  # the window may begin inside a piece of several tokens
            if stop == len(ids) and row is not rows[-1]:
                continue  # or end inside one
            text = LONG_CONTEXT[starts[begin]:ends[begin]]
            assert text == text.strip() and tokenizer.encode_plain([text])[0] == list(ids[begin:stop]), text


def test_the_windows_hold_the_tokenizers_own_ids_of_the_context_and_an_answer_decodes_back(any_tokenizer):
    """Cutting the context into words keeps each tokenizer's ids (BPE reads a word's leading space, SentencePiece
    falls back to whole words where cutting at punctuation would change its ids)."""
    context = LONG_CONTEXT + ' "Quoted", it\'s (really) 1990s-era text; don\'t stop.'
    rows = SpanQARecipe(any_tokenizer, 96, doc_stride=16).examples([("Q?", context, 0, "Norman")], 0, None)
    windows = [context_part(row)[1] for row in rows]
    ids = np.concatenate([windows[0]] + [window[16:] for window in windows[1:]])
    assert list(ids) == any_tokenizer.encode_plain([context])[0]
    for answer in ("Duke William", "The Answer, Here!", "(really) 1990s-era"):
        first_char = context.index(answer)
        spans = [token_span(row, first_char, first_char + len(answer)) for row in rows]
        start_logits, end_logits = logits_pointing_at(rows, spans)
        assert decode_answers(start_logits, end_logits, stacked(rows), [context]) == {0: answer}


def test_answer_tokens_are_right_in_every_window_that_holds_them_and_cls_elsewhere(tokenizer):
    answer = "The Answer, Here"
    question, context, start_char, _ = answer_record(answer=answer)
    rows = SpanQARecipe(tokenizer, 48, doc_stride=24).examples([(question, context, start_char, answer)], 0, None)
    holding = [row for row in rows if row["start_positions"] != 0]
    assert len(holding) >= 2 and len(holding) < len(rows)  # in the overlap of the last windows, not in the first
    for row in rows:
        start, end = row["start_positions"], row["end_positions"]
        _, _, starts, ends = context_part(row)
        if row in holding:
            assert tokenizer.decode(row["input_ids"][start:end + 1]) == "the answer, here"
            assert context[row["token_char_start"][start]:row["token_char_end"][end]] == answer
        else:
            assert start == end == 0  # [CLS]
            assert not (starts.min() <= start_char and context.index("Here") + 4 <= ends.max())


def test_an_answer_before_punctuation_ends_at_the_punctuation(tokenizer):
    context = "Meanwhile The Cat! sat on the mat."
    row, = SpanQARecipe(tokenizer, 64).examples([("who sat?", context, 10, "The Cat")], 0, None)
    start, end = row["start_positions"], row["end_positions"]
    assert context[row["token_char_start"][start]:row["token_char_end"][end]] == "The Cat"
    assert tokenizer.decode(row["input_ids"][start:end + 1]) == "the cat"


def test_a_record_whose_answer_is_not_at_its_start_is_an_error_naming_it(tokenizer):
    records = [answer_record(), ("q?", "returns a list", 3, "list"), ("q?", "returns a list", 3, "a tuple")]
    recipe = SpanQARecipe(tokenizer, 48, doc_stride=12)
    with pytest.raises(ValueError, match="record 1: the answer 'list' is not at character 3 of its context"):
        recipe.examples(records, 1, None)
    with pytest.raises(ValueError, match="record 2: the answer 'a tuple' is not at character 3"):
        recipe.examples(records, 2, None)
    with pytest.raises(ValueError, match="record 0: the answer is empty"):
        recipe.examples([("q?", "returns a list", 3, "")], 0, None)


def test_a_doc_stride_that_leaves_a_window_no_new_tokens_is_an_error_naming_the_record(tokenizer):
    with pytest.raises(ValueError, match=r"record 0: doc_stride=40 is not below the \d+ context tokens a window"):
        SpanQARecipe(tokenizer, 48, doc_stride=40).examples([answer_record()], 0, None)


def test_batches_of_windows_are_fixed_shape_and_resume_exactly(tokenizer):
    records = [answer_record(), ("Who crossed the sea?", LONG_CONTEXT, LONG_CONTEXT.index("Duke William"),
                                 "Duke William"), ("what sat?", "The Cat! sat on the mat.", 4, "Cat")] * 3
    make = lambda: question_answering_batches(records, tokenizer, batch_size=4, max_length=48, doc_stride=12,
                                              seed=3)
    uninterrupted = make()
    every = [next(uninterrupted) for _ in range(7)]
    # stop where a batch ends inside one context's windows: the resume must pick up mid-record
    stop = next(k for k in range(1, 4) if every[k - 1]["example_index"][-1] == every[k]["example_index"][0])
    batches = make()
    first = [next(batches) for _ in range(stop)]
    state = batches.get_state()
    expected = every[stop:]
    for batch in first + expected:
        assert {k: v.shape for k, v in batch.items()} == {
            "input_ids": (4, 48), "attention_mask": (4, 48), "token_type_ids": (4, 48), "start_positions": (4,),
            "end_positions": (4,), "example_index": (4,), "token_char_start": (4, 48), "token_char_end": (4, 48)}
        assert all(v.dtype == np.int32 for v in batch.values())
    resumed = make()
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert all(np.array_equal(got[k], want[k]) for k in want)


# -- decoding predicted spans -----------------------------------------------------------------------------------
def logits_pointing_at(rows, spans):
    """[rows, length] start and end logits with the highest at each row's (start, end) of `spans`, if any."""
    start_logits = np.random.default_rng(0).normal(size=(len(rows), len(rows[0]["input_ids"]))).astype(np.float32)
    end_logits = np.random.default_rng(1).normal(size=start_logits.shape).astype(np.float32)
    for k, span in enumerate(spans):
        if span is not None:
            start_logits[k, span[0]] += 20.0
            end_logits[k, span[1]] += 20.0
    return start_logits, end_logits


def stacked(rows):
    return {key: np.stack([np.asarray(row[key]) for row in rows]) for key in rows[0]}


def token_span(row, first_char, end_char):
    """The positions of the tokens starting at `first_char` and ending at `end_char` in the row, or None."""
    starts = np.flatnonzero(np.asarray(row["token_char_start"]) == first_char)
    ends = np.flatnonzero(np.asarray(row["token_char_end"]) == end_char)
    return (int(starts[0]), int(ends[-1])) if len(starts) and len(ends) else None


def test_decoding_gives_the_original_substring_of_a_span_only_in_a_later_window(tokenizer):
    answer = "The Answer, Here!"
    first_char = LONG_CONTEXT.index(answer)
    recipe = SpanQARecipe(tokenizer, 48, doc_stride=12)
    rows = recipe.examples([answer_record()], 0, None)
    spans = [token_span(row, first_char, first_char + len(answer)) for row in rows]
    assert spans[0] is None and any(span is not None for span in spans[1:])  # only later windows hold it
    start_logits, end_logits = logits_pointing_at(rows, spans)
    start_logits[0, 1] = end_logits[0, 2] = 100.0  # the question's tokens are never an answer
    assert decode_answers(start_logits, end_logits, stacked(rows), [LONG_CONTEXT]) == {0: answer}


def test_decoding_picks_each_examples_best_window_in_any_row_order_and_caps_the_length(tokenizer):
    short = "Meanwhile The Cat! sat on the mat."
    records = [answer_record(), ("who sat?", short, 10, "The Cat")]
    recipe = SpanQARecipe(tokenizer, 48, doc_stride=12)
    long_rows, short_rows = recipe.examples(records, 0, None), recipe.examples(records, 1, None)
    william = LONG_CONTEXT.index("Duke William")
    long_spans = [token_span(row, william, william + len("Duke William")) for row in long_rows]
    rows = short_rows + long_rows[::-1]  # examples interleaved, windows backwards
    spans = [token_span(short_rows[0], 10, 17)] + long_spans[::-1]
    start_logits, end_logits = logits_pointing_at(rows, spans)
    answers = decode_answers(start_logits, end_logits, stacked(rows), [r[1] for r in records])
    assert answers == {0: "Duke William", 1: "The Cat"}
    # the whole short context is longer than max_answer_length=3 tokens: its best allowed span is chosen instead
    whole = (int(np.flatnonzero(np.asarray(short_rows[0]["token_char_start"]) == 0)[0]),
             int(np.flatnonzero(np.asarray(short_rows[0]["token_char_end"]) == len(short))[-1]))
    start_logits, end_logits = logits_pointing_at(short_rows, [whole])
    answer = decode_answers(start_logits, end_logits, stacked(short_rows), {1: short}, max_answer_length=3)[1]
    assert answer != short and answer in short


def test_squad_metric_scores_the_examples_the_eval_rows_cover(tokenizer):
    contexts = [LONG_CONTEXT, "Meanwhile The Cat! sat on the mat."]
    references = [["the answer here", "final clause"], ["a cat", "the cat"], ["never seen"]]
    records = [answer_record("Q?", "The Answer, Here"), ("who sat?", contexts[1], 10, "The Cat")]
    recipe = SpanQARecipe(tokenizer, 48, doc_stride=12)
    rows = recipe.examples(records, 0, None) + recipe.examples(records, 1, None)
    first_char = LONG_CONTEXT.index("The Answer, Here")
    spans = [token_span(row, first_char, first_char + len("The Answer, Here")) if row["example_index"] == 0
             else token_span(row, 10, 18) for row in rows]  # "The Cat!": normalized, still "cat"
    start_logits, end_logits = logits_pointing_at(rows, spans)
    metric = squad_metric(contexts, references)
    scores = metric({"start_logits": start_logits, "end_logits": end_logits}, stacked(rows))
    assert scores == pytest.approx({"exact_match": 100.0, "f1": 100.0})  # example 2 had no rows: not scored



def test_an_example_whose_windows_offer_no_allowed_span_answers_empty(tokenizer):
    rows = SpanQARecipe(tokenizer, 64).examples([("who sat?", "The Cat! sat.", 4, "Cat")], 0, None)
    start_logits = np.zeros((1, 64), np.float32)
    end_logits = np.zeros((1, 64), np.float32)
    context_positions = np.flatnonzero(np.asarray(rows[0]["token_char_start"]) >= 0)
    end_logits[0, :] = -100.0
    end_logits[0, context_positions[0]] = 100.0  # every end the top ones allow comes before every allowed start
    start_logits[0, context_positions[1:]] = 100.0
    assert decode_answers(start_logits, end_logits, stacked(rows), ["The Cat! sat."], n_best=3) == {0: ""}


def test_squad_records_give_the_first_answer_to_train_on_and_all_of_them_to_score():
    from train.inputs import SquadRecords

    tfds_like = [("Who?", "The Cat sat.", {"text": np.array([b"The Cat", b"Cat"]), "answer_start": np.array([0, 4])})]
    records = SquadRecords(tfds_like)
    assert records[0] == ("Who?", "The Cat sat.", 0, "The Cat")
    assert records.contexts[0] == "The Cat sat." and records.references[0] == ["The Cat", "Cat"]
    assert len(records) == len(records.contexts) == 1


def test_a_recipe_without_an_eval_split_or_tfds_source_has_no_squad_metric():
    from train.recipes import load_recipe
    from train.squad import squad_metric_from_config

    config = load_recipe("squad_finetune")
    config.data.eval_split = ""
    with pytest.raises(ValueError, match="no data.eval_split to score against"):
        squad_metric_from_config(config)
    config.data.update(dict(eval_split="validation", source="shipped"))
    with pytest.raises(ValueError, match="question_answering data.source='shipped': use tfds"):
        squad_metric_from_config(config)


def test_a_question_answering_models_outputs_on_the_windows_decode_into_context_substrings(tokenizer):
    """The eval's path end to end: batches of windows -> bert-tiny's start/end logits -> answers and scores."""
    import jax

    import zoo
    from tests.model_helpers import jitted_apply, random_params

    records = [answer_record(), ("who sat?", "Meanwhile The Cat! sat on the mat.", 10, "The Cat")]
    batch = next(question_answering_batches(records, tokenizer, batch_size=8, max_length=48, doc_stride=12,
                                            shuffle=False, num_epochs=1))
    model = zoo.create("bert-tiny", task="question_answering")
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    outputs = jitted_apply(model)(random_params(model, *inputs), *inputs)
    gathered = {"start_logits": np.asarray(jax.device_get(outputs.start_logits)),
                "end_logits": np.asarray(jax.device_get(outputs.end_logits))}
    contexts = [record[1] for record in records]
    answers = decode_answers(gathered["start_logits"], gathered["end_logits"], batch, contexts)
    assert set(answers) == set(batch["example_index"].tolist())
    assert all(answers[example] in contexts[example] for example in answers)
    scores = squad_metric(contexts, [[record[3]] for record in records])(gathered, batch)
    assert set(scores) == {"exact_match", "f1"} and all(0.0 <= value <= 100.0 for value in scores.values())
