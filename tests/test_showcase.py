"""The [MASK] showcase of `python -m train` and the notebooks: held-out sentences, guesses with probabilities."""

import jax
import numpy as np
import optax
import pytest

import zoo
from tests.model_helpers import random_params
from train import data, inputs
from train.data.corpus import SHIPPED_VOCABULARIES
from train.optimizer import make_optimizer
from train.partitioning import make_mesh
from train.recipes import load_recipe
from train.showcase import FILL_IN, fill_in_guesses, show_fill_in, untrained_params
from train.step import init_train_state


def test_fill_in_sentences_are_in_the_held_out_documents_only():
    train_documents, eval_documents = inputs._held_out_split(load_recipe("bert_tiny"), data.shipped_documents())
    training = {sentence for i in range(len(train_documents)) for sentence in train_documents[i]}
    evaluation = {sentence for i in range(len(eval_documents)) for sentence in eval_documents[i]}
    vocabularies = [set(file.read_text().split()) for file in SHIPPED_VOCABULARIES.values()]
    for sentence, word in FILL_IN:
        filled = sentence.replace("[MASK]", word)
        assert filled in evaluation and filled not in training, filled
        # one token of every shipped vocabulary (the demo's 4096, the tiny presets' 1024): one [MASK] can hold it
        assert all(word in vocabulary for vocabulary in vocabularies), word


def test_guesses_are_the_softmax_at_the_mask_most_likely_first(capsys):
    model = zoo.create("bert-tiny", task="pretraining")
    tokenizer = data.shipped_tokenizer()
    params = random_params(model, np.zeros((1, 8), np.int32), seed=3, scale=0.5)["params"]
    sentences = ["return a shallow [MASK] of the dictionary.", "the [MASK] is returned."]
    guesses = fill_in_guesses(model, params, tokenizer, sentences, top=3)
    batch = tokenizer.encode_batch(sentences, max_length=128, padding="longest")
    logits = np.asarray(jax.jit(model.apply)({"params": params}, batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"]).prediction_logits, np.float64)
    words = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    for row, ids in enumerate(batch["input_ids"]):
        at_mask = logits[row, list(ids).index(tokenizer.mask_id)]
        probabilities = np.exp(at_mask - at_mask.max()) / np.exp(at_mask - at_mask.max()).sum()
        best = [t for t in np.argsort(-probabilities) if not words[t].startswith(("##", "["))][:3]
        assert [word for word, _ in guesses[row]] == [words[t] for t in best]
        np.testing.assert_allclose([p for _, p in guesses[row]], probabilities[best], rtol=1e-5)
    show_fill_in(model, params, tokenizer, sentences, words=["copy", "value"])
    shown = capsys.readouterr().out
    assert f"{guesses[0][0][0]} {guesses[0][0][1]:.1%}" in shown and "[copy]" in shown


def test_a_continuation_piece_or_special_token_is_never_a_guess_however_likely():
    model = zoo.create("bert-tiny", task="mlm")
    tokenizer = data.shipped_tokenizer()
    params = random_params(model, np.zeros((1, 8), np.int32), seed=3, scale=0.5)["params"]
    piece, special = tokenizer.token_to_id("##s"), tokenizer.token_to_id("[SEP]")
    bias = np.array(params["mlm_head"]["decoder"]["bias"])
    bias[[piece, special]] += 50.0  # the two likeliest tokens by far
    params["mlm_head"]["decoder"]["bias"] = bias
    (guesses,) = fill_in_guesses(model, params, tokenizer, ["return a shallow [MASK] of the dictionary."])
    assert len(guesses) == 3 and not {"##s", "[SEP]", "s"} & {word for word, _ in guesses}
    assert all(probability < 1e-6 for _, probability in guesses)  # the softmax over the whole vocabulary


def test_fill_in_refuses_a_sentence_without_one_mask():
    model = zoo.create("bert-tiny", task="mlm")
    params = random_params(model, np.zeros((1, 8), np.int32))["params"]
    with pytest.raises(ValueError, match="has 0 \\[MASK\\] tokens"):
        fill_in_guesses(model, params, data.shipped_tokenizer(), ["no mask here."])


def test_untrained_params_are_the_weights_training_starts_from():
    model = zoo.create("bert-tiny", task="mlm")
    state, _ = init_train_state(model, make_optimizer(optax.constant_schedule(1e-3)), jax.random.key(7),
                                make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(untrained_params(model, 7)),
                 jax.device_get(state.params))
