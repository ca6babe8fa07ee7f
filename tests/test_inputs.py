"""The data builders of recipes (train/inputs.py): which documents are held out for eval, which tokenizer a recipe
names."""

import numpy as np
import pytest

import zoo
from train import inputs
from train.data.corpus import SPECIAL_TOKENS, read_corpus_text
from train.recipes import base_config


def split_config(eval_split_seed: int, eval_fraction: float = 0.1):
    config = base_config()
    config.data.update(dict(eval_batches=1, eval_fraction=eval_fraction, eval_split_seed=eval_split_seed))
    return config


def test_random_held_out_documents_are_seeded_and_count_the_fraction():
    first = inputs.held_out_documents(100, 10, seed=3)
    assert first.sum() == 10
    np.testing.assert_array_equal(first, inputs.held_out_documents(100, 10, seed=3))
    assert not np.array_equal(first, inputs.held_out_documents(100, 10, seed=4))
    with pytest.raises(ValueError, match="cannot hold out 11 of 10"):
        inputs.held_out_documents(10, 11, seed=0)


def test_random_split_is_disjoint_covers_every_document_and_keeps_the_corpus_order():
    documents = [[f"document {i}.", "a sentence."] for i in range(50)]
    train, held_out = inputs._held_out_split(split_config(eval_split_seed=0), documents)
    train_ids = [documents.index(train[i]) for i in range(len(train))]
    held_out_ids = [documents.index(held_out[i]) for i in range(len(held_out))]
    assert len(held_out_ids) == 5 and sorted(train_ids + held_out_ids) == list(range(50))
    assert train_ids == sorted(train_ids) and held_out_ids == sorted(held_out_ids)
    assert held_out_ids != list(range(45, 50))  # drawn from the whole corpus, not its last documents
    np.testing.assert_array_equal(np.isin(np.arange(50), held_out_ids), inputs.held_out_documents(50, 5, seed=0))


def test_negative_split_seed_holds_out_the_last_documents():
    documents = [[f"document {i}."] for i in range(50)]
    train, held_out = inputs._held_out_split(split_config(eval_split_seed=-1), documents)
    assert train == documents[:45] and held_out == documents[45:]


def test_held_out_batches_are_the_same_rows_whatever_the_run_seed():
    from configs.bert_tiny import get_config

    def first_batches(seed):
        config = get_config()
        config.seed = seed
        config.train.batch_size = 8
        config.data.update(dict(eval_batches=1, workers=0))
        datasets = inputs.sentence_pair_data(config, inputs.recipe_tokenizer(config))
        return next(iter(datasets.train)), next(datasets.eval())

    (train_0, eval_0), (train_1, eval_1) = first_batches(0), first_batches(1)
    # the run's seed draws the training rows' masks, negatives and order...
    assert not np.array_equal(train_0["input_ids"], train_1["input_ids"])
    # ...but not the held-out rows': both runs are scored on the same masks and next-sentence negatives
    assert eval_0.keys() == eval_1.keys()
    for key in eval_0:
        np.testing.assert_array_equal(eval_0[key], eval_1[key], err_msg=key)


def test_shipped_vocabularies_share_the_special_ids_and_the_larger_keeps_more_words_whole():
    small, large = inputs.tokenizer_from_spec("shipped"), inputs.tokenizer_from_spec("shipped-4096")
    assert (small.vocab_size, large.vocab_size) == (1024, 4096)
    assert [large.token_to_id(token) for token in SPECIAL_TOKENS] == [small.token_to_id(token) for token in
                                                                      SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    text = read_corpus_text().splitlines()[:3000]
    small_count, large_count = (sum(map(len, tokenizer.encode_plain(text))) for tokenizer in (small, large))
    assert large_count < 0.8 * small_count  # 0.74 measured: a row of the same length holds a third more text
    with_sentinels = inputs.tokenizer_from_spec("shipped-4096", extra_ids=3)
    assert with_sentinels.vocab_size == 4099 and with_sentinels.token_to_id("<extra_id_0>") == 4098


def test_the_demo_recipe_tokenizes_with_the_4096_vocabulary_its_model_has():
    from configs.bert_tiny import get_config

    config = get_config()
    model = zoo.create(config.model, task=config.task, **config.model_overrides)
    assert inputs.load_tokenizer(config, model).vocab_size == model.config.vocab_size == 4096
