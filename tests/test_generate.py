"""zoo.generate on tiny random models: against a no-cache argmax loop, against itself across batching, beams and
keys, and the contract of EOS, padding and compilation."""

import dataclasses
import importlib

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.model_helpers import jitted_apply, random_params
from zoo.generate import _generate_jit, sample_token

generate_module = importlib.import_module("zoo.generate")  # the module: `zoo.generate` is the function

GPT = zoo.create("gpt-tiny", task="causal_lm")
# scanned layers: the cache has a leading layer axis, which beam search must reorder along the batch axis behind it
SEQ2SEQ = zoo.create("transformer-tiny", task="seq2seq", scan_layers=True)
PAD = 1023  # never chosen by these models in practice, so "pad after EOS" is visible
# Wide weights make the logits peaked, so that no argmax rests on a float-rounding tie.
WEIGHT_SCALE = 0.5
# Module-level, so that every test's reference forward of one shape is one compile.
GPT_APPLY, SEQ2SEQ_APPLY = jitted_apply(GPT), jitted_apply(SEQ2SEQ)


@pytest.fixture(scope="module")
def gpt_params():
    return random_params(GPT, np.ones((1, 4), np.int32), scale=WEIGHT_SCALE)["params"]


@pytest.fixture(scope="module")
def seq2seq_params():
    ids = np.ones((1, 4), np.int32)
    return random_params(SEQ2SEQ, ids, ids, scale=WEIGHT_SCALE)["params"]


# Test-side arrays are NumPy, and generate's outputs are read as NumPy before they are indexed: each eager jnp
# operation compiles a program of its own, for every new shape or index.
def prompts(batch=2, length=5, seed=0):
    return np.random.default_rng(seed).integers(2, 1000, (batch, length), dtype=np.int32)


def argmax_loop(logits_of, ids, steps, buffer_length=None):
    """The reference: re-run the whole forward pass (no cache) at every step and take the argmax.

    The sequence lives in a fixed-size buffer (`buffer_length` slots, by default just enough) so that the forward
    compiles once, and once for prompts of several lengths given one `buffer_length`; the model is causal, so the
    logits at position t do not see the unfilled slots after it.
    """
    length = ids.shape[1]
    buffer = np.zeros((ids.shape[0], buffer_length or length + steps), np.int32)
    buffer[:, :length] = ids
    for t in range(length, length + steps):
        buffer[:, t] = np.argmax(np.asarray(logits_of(buffer))[:, t - 1], axis=-1)
    return buffer[:, :length + steps]


def truncate_at_eos(generated, eos, pad):
    """Each row up to and including its first EOS, then pad: what generate must return, from a run without EOS."""
    out = np.array(generated)
    for row in out:
        hits = np.flatnonzero(np.isin(row, eos))
        if hits.size:
            row[hits[0] + 1:] = pad
    return out


def test_greedy_equals_argmax_loop_over_the_full_forward_gpt(gpt_params):
    x = prompts()
    out = zoo.generate(GPT, gpt_params, x, max_new_tokens=6, eos_token_id=None)
    expected = argmax_loop(lambda ids: GPT_APPLY({"params": gpt_params}, ids).logits, x, 6)
    np.testing.assert_array_equal(out.sequences, expected)
    assert out.scores is None


def test_greedy_equals_argmax_loop_over_the_full_forward_encoder_decoder(seq2seq_params):
    source = prompts()
    source_mask = np.ones_like(source)
    source_mask[1, 3:] = 0
    out = zoo.generate(SEQ2SEQ, seq2seq_params, source, source_mask, max_new_tokens=6, eos_token_id=None)
    start = np.zeros((2, 1), np.int32)  # transformer-tiny's decoder_start_token_id
    expected = argmax_loop(lambda ids: SEQ2SEQ_APPLY({"params": seq2seq_params}, source, ids,
                                                     attention_mask=source_mask).logits, start, 6)
    np.testing.assert_array_equal(out.sequences, expected)


def test_eos_ends_a_row_and_pads_the_rest(gpt_params):
    x = prompts()
    # the settings of the run without EOS in the test below: one compile for both
    free = np.asarray(zoo.generate(GPT, gpt_params, x, max_new_tokens=9, eos_token_id=None).sequences)
    eos = int(free[0, 5 + 2])  # a token row 0 emits at its third step
    stopped = np.asarray(zoo.generate(GPT, gpt_params, x, max_new_tokens=9, eos_token_id=eos,
                                      pad_token_id=PAD).sequences)
    np.testing.assert_array_equal(stopped[:, 5:], truncate_at_eos(free[:, 5:], eos, PAD))
    assert np.all(stopped[0, 5 + 3:] == PAD)


def test_the_loop_stops_once_every_row_has_ended(gpt_params, monkeypatch):
    x = prompts(seed=5)
    free = np.asarray(zoo.generate(GPT, gpt_params, x, max_new_tokens=9, eos_token_id=None).sequences)[:, 5:]
    eos = (int(free[0, 1]), int(free[1, 2]))  # two EOS ids: row 0 ends by its 2nd new token, row 1 by its 3rd
    last = max(np.flatnonzero(np.isin(row, eos))[0] for row in free)
    steps = []
    start_decoder_only = generate_module.start_decoder_only

    def counted_start(*args):  # its tokens_to_logits runs once per loop iteration of the compiled loop
        start = start_decoder_only(*args)

        def tokens_to_logits(ids, cache):
            jax.debug.callback(lambda: steps.append(1))
            return start.tokens_to_logits(ids, cache)

        return dataclasses.replace(start, tokens_to_logits=tokens_to_logits)

    monkeypatch.setattr(generate_module, "start_decoder_only", counted_start)
    out = zoo.generate(GPT, gpt_params, x, max_new_tokens=9, eos_token_id=eos, pad_token_id=PAD - 1)
    np.testing.assert_array_equal(np.asarray(out.sequences)[:, 5:], truncate_at_eos(free, eos, PAD - 1))
    assert last <= 2 and len(steps) == last  # the prompt pass gives the first new token; one step per token after


def test_left_padded_batch_gives_each_prompt_its_tokens_alone(gpt_params):
    short, long = prompts(1, 3, seed=1), prompts(1, 5, seed=2)
    batch = np.concatenate([np.pad(short, ((0, 0), (2, 0)), constant_values=PAD), long])
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    out = np.asarray(zoo.generate(GPT, gpt_params, batch, mask, max_new_tokens=6, eos_token_id=None).sequences)
    for row, prompt in enumerate([short, long]):
        alone = argmax_loop(lambda ids: GPT_APPLY({"params": gpt_params}, ids).logits, prompt, 6,
                            buffer_length=batch.shape[1] + 6)
        np.testing.assert_array_equal(out[row, 5:], alone[0, prompt.shape[1]:])


def test_left_padded_batch_gives_each_prompt_its_beams_alone(gpt_params):
    short, long = prompts(1, 3, seed=1), prompts(1, 5, seed=2)
    batch = np.concatenate([np.pad(short, ((0, 0), (2, 0))), long])
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    settings = dict(max_new_tokens=5, method="beam", num_beams=3, eos_token_id=None)
    together = jax.device_get(zoo.generate(GPT, gpt_params, batch, mask, **settings))
    for row, prompt in enumerate([short, long]):
        alone = jax.device_get(zoo.generate(GPT, gpt_params, prompt, **settings))
        np.testing.assert_array_equal(together.sequences[row, 5:], alone.sequences[0, prompt.shape[1]:])
        np.testing.assert_allclose(together.scores[row], alone.scores[0], rtol=1e-5)


@pytest.mark.parametrize("model_name", ["gpt", "seq2seq"])
def test_beam_search_with_one_beam_equals_greedy(model_name, gpt_params, seq2seq_params):
    model, params = (GPT, gpt_params) if model_name == "gpt" else (SEQ2SEQ, seq2seq_params)
    x = prompts()
    free = np.asarray(zoo.generate(model, params, x, max_new_tokens=6, eos_token_id=None).sequences)
    eos = int(free[0, -3])  # row 0 stops early, so the bank's EOS path is exercised too
    greedy = zoo.generate(model, params, x, max_new_tokens=6, eos_token_id=eos, pad_token_id=PAD)
    beam = zoo.generate(model, params, x, max_new_tokens=6, eos_token_id=eos, pad_token_id=PAD, method="beam",
                        num_beams=1)
    np.testing.assert_array_equal(beam.sequences, greedy.sequences)


def dot_general_operands(jaxpr, in_loop=False) -> list:
    """(operand shapes, whether inside a while loop) of every dot_general of `jaxpr` and of the jaxprs inside it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(tuple(v.aval.shape) for v in eqn.invars), in_loop))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = sub.jaxpr if isinstance(sub, jax.extend.core.ClosedJaxpr) else sub
                if isinstance(sub, jax.extend.core.Jaxpr):
                    found += dot_general_operands(sub, in_loop or eqn.primitive.name == "while")
    return found


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_generate_projects_the_source_into_keys_and_values_once_not_at_every_step(method, seq2seq_params):
    kernel = seq2seq_params["decoder"]["layers"]["cross_attention"]["key_value"]["kernel"].shape[1:]  # one layer's
    generate = lambda params: zoo.generate(SEQ2SEQ, params, prompts(), max_new_tokens=4, method=method,
                                           num_beams=3).sequences
    jaxpr = jax.make_jaxpr(generate)(seq2seq_params).jaxpr
    projections_in_loop = [in_loop for operands, in_loop in dot_general_operands(jaxpr) if kernel in operands]
    # the first decoder call projects the source (once per layer: one scanned layer here); no step of the loop does
    assert projections_in_loop == [False]


@jax.jit
def teacher_forced_log_prob(params, source, sequences):
    """Each row's sum of the log-probs of its tokens after the first, fed the ones before (jitted with the params
    an argument: one compile for every test)."""
    log_probs = jax.nn.log_softmax(SEQ2SEQ.apply({"params": params}, source, sequences[:, :-1]).logits)
    return jnp.take_along_axis(log_probs, sequences[:, 1:, None], axis=-1).sum(axis=(1, 2))


@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_beam_score_is_the_sum_of_log_probs_over_length_to_the_penalty(length_penalty, seq2seq_params):
    source = prompts()
    out = zoo.generate(SEQ2SEQ, seq2seq_params, source, max_new_tokens=5, method="beam", num_beams=4,
                       length_penalty=length_penalty, eos_token_id=None)

    chex.assert_shape(out.sequences, (2, 6))
    assert out.sequences.dtype == jnp.int32
    np.testing.assert_allclose(out.scores, np.asarray(teacher_forced_log_prob(seq2seq_params, source, out.sequences))
                               / 5 ** length_penalty, rtol=1e-5)


def test_sampling_with_a_fixed_key_is_reproducible_and_keys_differ(gpt_params):
    x = prompts()
    run = lambda seed: zoo.generate(GPT, gpt_params, x, max_new_tokens=8, method="sample", temperature=2.0,
                                    key=jax.random.key(seed), eos_token_id=None).sequences
    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_sampling_with_top_k_of_one_equals_greedy(gpt_params):
    x = prompts()
    greedy = zoo.generate(GPT, gpt_params, x, max_new_tokens=6, eos_token_id=None).sequences
    sampled = zoo.generate(GPT, gpt_params, x, max_new_tokens=6, method="sample", top_k=1, temperature=3.0,
                           key=jax.random.key(7), eos_token_id=None).sequences
    np.testing.assert_array_equal(sampled, greedy)


# probabilities 0.4, 0.3, 0.2, 0.06, 0.04 spread over a shuffled vocabulary of 8 (three tokens impossible)
PROBS = np.array([0.3, 0.0, 0.06, 0.4, 0.0, 0.04, 0.2, 0.0])


@pytest.mark.parametrize("filters, allowed", [
    (dict(top_k=2), {3, 0}),
    (dict(top_p=0.75), {3, 0, 6}),  # 0.4 + 0.3 < 0.75, so the 0.2 token is needed
    (dict(top_p=0.7), {3, 0}),  # 0.4 + 0.3 reaches 0.7
    (dict(top_k=4, top_p=0.95), {3, 0, 6, 2}),
    (dict(top_k=3, top_p=0.95, temperature=5.0), {3, 0, 6}),  # top-k applies after the temperature
])
def test_filtered_sampling_never_emits_an_excluded_token(filters, allowed):
    logits = np.log(PROBS.astype(np.float32) + np.float32(1e-30))[None]
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.jit(jax.vmap(lambda k: sample_token(logits, k, **filters)[0]))(keys)
    assert set(np.unique(np.asarray(draws)).tolist()) == allowed  # each allowed token appears, nothing else


def test_a_new_prompt_of_the_same_shape_does_not_recompile(gpt_params):
    settings = dict(max_new_tokens=3, method="sample", top_k=5, key=jax.random.key(0))
    zoo.generate(GPT, gpt_params, prompts(2, 4, seed=3), **settings)
    compiled = _generate_jit._cache_size()
    mask = jnp.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    zoo.generate(GPT, gpt_params, prompts(2, 4, seed=4), mask, **{**settings, "key": jax.random.key(1)})
    assert _generate_jit._cache_size() == compiled


def test_bad_requests_are_value_errors(gpt_params):
    x = prompts()
    with pytest.raises(ValueError, match="left-padded"):
        zoo.generate(GPT, gpt_params, x, jnp.array([[1, 1, 1, 0, 0], [1] * 5]), max_new_tokens=2)
    with pytest.raises(ValueError, match="needs a key"):
        zoo.generate(GPT, gpt_params, x, max_new_tokens=2, method="sample")
    with pytest.raises(ValueError, match="method='topk' is not one of"):
        zoo.generate(GPT, gpt_params, x, max_new_tokens=2, method="topk")
    with pytest.raises(ValueError, match="longer than the model's max_length 128"):
        zoo.generate(GPT, gpt_params, x, max_new_tokens=124)
    with pytest.raises(ValueError, match="causal_lm Transformer or a seq2seq"):
        zoo.generate(zoo.create("gpt-tiny"), gpt_params, x, max_new_tokens=2)


@pytest.mark.parametrize("settings, field", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(method="sample", temperature=0.0), "temperature"),
    (dict(method="sample", top_k=-1), "top_k"),
    (dict(method="sample", top_p=0.0), "top_p"),
    (dict(method="sample", top_p=1.5), "top_p"),
    (dict(method="beam", num_beams=0), "num_beams"),
    (dict(early_stopping="sometimes"), "early_stopping"),
])
def test_bad_settings_name_the_field_before_anything_is_traced(settings, field, gpt_params, monkeypatch):
    def traced(*args, **kwargs):
        raise AssertionError("generate traced a bad request")

    monkeypatch.setattr(generate_module, "_generate_jit", traced)
    with pytest.raises(ValueError, match=field):
        zoo.generate(GPT, gpt_params, prompts(), **{"max_new_tokens": 2, "key": jax.random.key(0), **settings})


@pytest.mark.parametrize("model", [GPT, SEQ2SEQ, zoo.create("transformer-tiny", task="seq2seq")],
                         ids=["gpt", "seq2seq_scanned", "seq2seq_unrolled"])
def test_cache_layout_declares_the_axis_that_grows_with_the_batch(model):
    from flax import traverse_util

    one, two = (traverse_util.flatten_dict(jax.eval_shape(lambda b=b: zoo.registry.init_cache(model, b, 6, 5)))
                for b in (1, 2))
    for path, variable in one.items():
        shape, doubled = jax.tree.leaves(variable)[0].shape, jax.tree.leaves(two[path])[0].shape
        grows = [axis - len(shape) for axis, (a, b) in enumerate(zip(shape, doubled)) if a != b]
        declared = generate_module.cache_batch_axis(path, len(shape))
        assert grows == ([] if declared is None else [declared]), path


# Parity with transformers' generate on the same random weights, converted by zoo.from_pretrained.

@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return torch, transformers


def public_model(hf, architecture, config, folder, jitter):
    """A random transformers model, weights moved far from their init by `jitter(name, parameter)` times a normal
    draw so that the logits are peaked, and zoo's copy of it through `save_pretrained` and `zoo.from_pretrained`."""
    torch, transformers = hf
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # Marian's sinusoid is frozen: zoo computes it
                p.add_(jitter(name, p) * torch.randn_like(p))
    model.save_pretrained(folder)
    return model, *zoo.from_pretrained(folder)


def hf_generate(hf, model, inputs, **settings):
    """transformers' generate with every processor that zoo does not have switched off explicitly."""
    torch, transformers = hf
    switched_off = dict(do_sample=False, min_length=0, min_new_tokens=None, no_repeat_ngram_size=0,
                        repetition_penalty=1.0, forced_bos_token_id=None, forced_eos_token_id=None, bad_words_ids=None,
                        num_return_sequences=1)
    config = transformers.GenerationConfig(use_cache=True, **{**switched_off, **settings})
    model.generation_config = config  # so that no default of the model's own generation config comes back
    with torch.no_grad():
        return model.generate(**{k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()},
                              generation_config=config, return_dict_in_generate=True, output_scores=True)


def assert_same_tokens(ours, theirs, pad):
    """transformers stops the batch at its longest row; zoo's fixed-size sequences must hold pad after that."""
    ours, theirs = np.asarray(ours), theirs.numpy()
    np.testing.assert_array_equal(ours[:, :theirs.shape[1]], theirs)
    assert np.all(ours[:, theirs.shape[1]:] == pad)


HF_SEARCHES = [dict(num_beams=1), dict(num_beams=4, length_penalty=1.0, early_stopping=False),
               dict(num_beams=4, length_penalty=0.6, early_stopping=True)]


@pytest.fixture(scope="module")
def gpt2_pair(hf, tmp_path_factory):
    config = hf[1].GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64)
    return public_model(hf, "GPT2LMHeadModel", config, tmp_path_factory.mktemp("gpt2"), lambda name, p: 0.3)


@pytest.fixture(scope="module")
def marian_pair(hf, tmp_path_factory):
    config = hf[1].MarianConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99,
                                max_position_embeddings=64, scale_embedding=True, pad_token_id=98, eos_token_id=1,
                                decoder_start_token_id=98, activation_function="swish")
    return public_model(hf, "MarianMTModel", config, tmp_path_factory.mktemp("marian"), post_ln_jitter)


def post_ln_jitter(name, p):
    """A random post-LN decoder repeats one token when cross-attention or the feed-forward outweighs the rest."""
    return 0.0 if p.ndim < 2 else 0.1 if "encoder_attn" in name else 0.3 if "fc" in name else 1.0


@pytest.fixture(scope="module")
def bart_pair(hf, tmp_path_factory):
    config = hf[1].BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                              decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99,
                              max_position_embeddings=64)  # BART's pad 1, </s> 2 and decoder start </s>
    return public_model(hf, "BartForConditionalGeneration", config, tmp_path_factory.mktemp("bart"), post_ln_jitter)


def eos_candidate(sequences, start, rarest=False):
    """The most (or least) frequent generated token: as EOS it ends some rows early and leaves others running."""
    values, counts = np.unique(np.asarray(sequences)[:, start:], return_counts=True)
    return int(values[np.argmin(counts) if rarest else np.argmax(counts)])


def assert_generation_equals_transformers(hf, pair, ids, mask, search, *, pad, eos_from, suppress_frequent=False,
                                          **settings):
    """Same tokens (and beam scores) as transformers, with an EOS picked by `eos_from` from a run without one.

    `suppress_frequent`: OPUS-MT's settings too (pad suppressed, EOS forced last), and the most frequent token banned.
    """
    public, model, params = pair
    free = zoo.generate(model, params, ids, mask, max_new_tokens=10, eos_token_id=None, **settings)
    eos = eos_from(free.sequences)
    settings.update(max_new_tokens=10, eos_token_id=eos, pad_token_id=pad, **search)
    ours_only, theirs_only = {}, {}
    if suppress_frequent:
        first_new = 1 if model.config.is_encoder_decoder else ids.shape[1]
        banned = (pad, eos_candidate(free.sequences, first_new))
        ours_only = dict(suppress_token_ids=banned, forced_eos_token_id=eos)
        theirs_only = dict(bad_words_ids=[[token] for token in banned], forced_eos_token_id=eos)
    method = "greedy" if search["num_beams"] == 1 else "beam"
    ours = zoo.generate(model, params, ids, mask, method=method, **settings, **ours_only)
    theirs = hf_generate(hf, public, {"input_ids": ids, "attention_mask": mask}, **settings, **theirs_only)
    assert_same_tokens(ours.sequences, theirs.sequences, pad)
    if search["num_beams"] > 1:
        np.testing.assert_allclose(ours.scores, theirs.sequences_scores.numpy(), atol=1e-4)


def padded_batch(seed, length, real_lengths, pad, left):
    ids = np.random.default_rng(seed).integers(3, 97, (len(real_lengths), length))
    mask = (np.arange(length)[None] < np.array(real_lengths)[:, None]).astype(ids.dtype)
    mask = mask[:, ::-1].copy() if left else mask
    ids[mask == 0] = pad
    return ids, mask


@pytest.mark.parametrize("search", HF_SEARCHES, ids=["greedy", "beam4", "beam4-early-penalty"])
def test_gpt2_generation_equals_transformers(search, hf, gpt2_pair):
    ids, mask = padded_batch(0, 6, [6, 4, 2], pad=97, left=True)
    assert_generation_equals_transformers(hf, gpt2_pair, ids, mask, search, pad=97,
                                          eos_from=lambda sequences: eos_candidate(sequences, 6))


@pytest.mark.parametrize("opus_mt", [False, True], ids=["plain", "opus-mt-settings"])
@pytest.mark.parametrize("search", HF_SEARCHES, ids=["greedy", "beam4", "beam4-early-penalty"])
def test_marian_generation_equals_transformers(search, opus_mt, hf, marian_pair):
    ids, mask = padded_batch(1, 7, [7, 5, 3], pad=98, left=False)  # Marian tokenizers pad the source on the right
    assert_generation_equals_transformers(hf, marian_pair, ids, mask, search, pad=98, decoder_start_token_id=98,
                                          eos_from=lambda sequences: eos_candidate(sequences, 2, rarest=True),
                                          suppress_frequent=opus_mt)


@pytest.mark.parametrize("search", HF_SEARCHES, ids=["greedy", "beam4", "beam4-early-penalty"])
def test_bart_generation_equals_transformers(search, hf, bart_pair):
    # BART's forced <s> and </s> are switched off on both sides (hf_generate); its decoder starts from </s> (2)
    ids, mask = padded_batch(2, 7, [7, 5, 3], pad=1, left=False)
    public, model, params = bart_pair
    assert model.config.decoder_start_token_id == 2
    free = np.asarray(zoo.generate(model, params, ids, mask, max_new_tokens=10, eos_token_id=None).sequences)
    assert len(np.unique(free[:, 1:])) > 5 and len({tuple(row) for row in free}) == 3  # the outputs vary
    assert_generation_equals_transformers(hf, bart_pair, ids, mask, search, pad=1, decoder_start_token_id=2,
                                          eos_from=lambda sequences: eos_candidate(sequences, 2, rarest=True))
