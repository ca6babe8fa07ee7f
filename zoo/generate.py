"""Autoregressive generation for zoo's causal LMs (GPT) and encoder-decoders (Vaswani, Marian).

`generate` is one `jax.jit` over a `lax.while_loop`: the prompt fills a fixed-size KV cache in one call (prompt
length + `max_new_tokens` slots), then each iteration feeds one token per row. Nothing is traced per token, and a
new prompt of the same padded shape reuses the compiled loop. The loop stops as soon as every row has finished.
An encoder-decoder encodes the source once, and its first decoder call stores every layer's cross-attention keys
and values of the source in the cache: a step projects only its own token.

Beam search follows the semantics of transformers' `generate`: a hypothesis scores sum(log-probs) /
generated_length ** length_penalty, finished hypotheses are kept in a bank of `num_beams` per row, and
`early_stopping` is True (stop once the bank is full), False (stop when the best running beam, scored at the current
length, cannot beat the worst banked one) or "never" (the same bound at the longest reachable length).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from zoo.models import EncoderDecoderTransformer, Transformer
from zoo.registry import init_cache

METHODS = ("greedy", "sample", "beam")
NEG = -1.0e9  # the score of an impossible beam, as in transformers (finite, so sums never turn into NaN)
_FROM_CONFIG = object()


@flax.struct.dataclass
class GenerateOutput:
    """sequences: [batch, prompt_length + max_new_tokens], the prompt (for an encoder-decoder, the decoder start
    token) then the new tokens, `pad_token_id` after EOS. scores: beam search only, [batch], the returned
    hypothesis' sum of log-probs / generated_length ** length_penalty."""

    sequences: jax.Array
    scores: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Everything `generate` compiles for: a change here is a new compilation, a new prompt is not."""

    method: str
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_ids: tuple = ()  # empty: never stop before max_new_tokens
    pad_token_id: int = 0
    decoder_start_token_id: Optional[int] = None
    suppress_token_ids: tuple = ()
    forced_eos_token_id: Optional[int] = None


def generate(model, params, input_ids, attention_mask=None, *, max_new_tokens: int, method: str = "greedy",
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool | str = False, eos_token_id=_FROM_CONFIG,
             pad_token_id: Optional[int] = None, decoder_start_token_id: Optional[int] = None,
             suppress_token_ids: Sequence[int] = (), forced_eos_token_id: Optional[int] = None,
             key: Optional[jax.Array] = None) -> GenerateOutput:
    """Continues `input_ids` by up to `max_new_tokens` tokens per row.

    Args:
      model: a `causal_lm` Transformer (GPT) or a `seq2seq` EncoderDecoderTransformer.
      params: its parameters (or the variables dict holding them under "params").
      input_ids: [batch, length] int. For GPT the prompts, left-padded; for an encoder-decoder the source.
      attention_mask: [batch, length], 1 at real tokens; GPT prompts must be left-padded (zeros first).
      method: "greedy", "sample" (temperature, then top_k, then top_p, as transformers orders them) or "beam".
      eos_token_id: an id or a sequence of ids that end a row; default the config's; None never stops early.
      pad_token_id: written after a row's EOS; default the config's.
      decoder_start_token_id: the first decoder token of an encoder-decoder; default the config's.
      suppress_token_ids: ids never generated (transformers' single-token `bad_words_ids`; OPUS-MT bans its pad).
      forced_eos_token_id: the id forced as the last of the `max_new_tokens` (OPUS-MT's generation config sets it).
      key: a `jax.random.key`, needed by "sample".
    Returns:
      `GenerateOutput`.
    Raises:
      ValueError: for a model without a generating head, a method or setting out of range, a missing key or
        decoder start token, a total length beyond the model's max_length, or (when the mask is a concrete array)
        right-padded GPT prompts.
    """
    cfg = model.config
    seq2seq = isinstance(model, EncoderDecoderTransformer) and model.task == "seq2seq"
    if not seq2seq and not (isinstance(model, Transformer) and model.task == "causal_lm"):
        raise ValueError(f"generate needs a causal_lm Transformer or a seq2seq EncoderDecoderTransformer, got "
                         f"{type(model).__name__} with task {model.task!r}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if method == "sample":
        if key is None:
            raise ValueError('method="sample" needs a key, e.g. key=jax.random.key(0)')
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= top_k or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
    if method == "beam" and num_beams < 1:
        raise ValueError(f"num_beams must be positive, got {num_beams}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {attention_mask.shape} but input_ids has shape {input_ids.shape}")
    if seq2seq:
        decoder_start_token_id = (cfg.decoder_start_token_id if decoder_start_token_id is None
                                  else decoder_start_token_id)
        if decoder_start_token_id is None:
            raise ValueError("an encoder-decoder needs decoder_start_token_id (argument or config)")
        prompt_length = 1
    else:
        prompt_length = input_ids.shape[1]
        if not isinstance(attention_mask, jax.core.Tracer) and _is_right_padded(np.asarray(attention_mask)):
            raise ValueError("GPT prompts must be left-padded: attention_mask has a 0 after a 1 in some row")
    if prompt_length + max_new_tokens > cfg.max_length:
        raise ValueError(f"prompt length {prompt_length} + max_new_tokens {max_new_tokens} is longer than the "
                         f"model's max_length {cfg.max_length} positions")
    eos = cfg.eos_token_id if eos_token_id is _FROM_CONFIG else eos_token_id
    eos = () if eos is None else (int(eos),) if np.ndim(eos) == 0 else tuple(int(e) for e in eos)
    beams = num_beams if method == "beam" else 1
    if method == "beam" and max(2, 1 + len(eos)) > cfg.vocab_size:  # each beam keeps that many candidates per step
        raise ValueError(f"the vocabulary of {cfg.vocab_size} is too small for beam search with {len(eos)} EOS ids")
    for name, ids in (("suppress_token_ids", tuple(suppress_token_ids)),
                      ("forced_eos_token_id", () if forced_eos_token_id is None else (forced_eos_token_id,))):
        if any(not 0 <= i < cfg.vocab_size for i in ids):
            raise ValueError(f"{name}={ids} has an id outside the vocabulary of {cfg.vocab_size}")
    settings = GenerationSettings(
        method=method, max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=int(top_k),
        top_p=float(top_p), num_beams=beams, length_penalty=float(length_penalty), early_stopping=early_stopping,
        eos_token_ids=eos, pad_token_id=int(cfg.pad_token_id if pad_token_id is None else pad_token_id),
        decoder_start_token_id=decoder_start_token_id if seq2seq else None,
        suppress_token_ids=tuple(int(i) for i in suppress_token_ids),
        forced_eos_token_id=None if forced_eos_token_id is None else int(forced_eos_token_id))
    variables = {"params": nn.unbox(params["params"] if "params" in params else params)}
    key = jax.random.key(0) if key is None else key
    return _generate_jit(variables, input_ids.astype(jnp.int32), attention_mask.astype(jnp.int32), key,
                         model=model, settings=settings)


def _is_right_padded(mask: np.ndarray) -> bool:
    real = mask != 0
    return bool(np.any(real[:, :-1] & ~real[:, 1:]))


def filter_logits(logits, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """[..., vocab] logits / temperature, with the tokens outside the top-k and outside the nucleus at -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches `top_p` (at least one token),
    as transformers' TopPLogitsWarper keeps it; ties with the last kept logit are kept.
    """
    logits = logits.astype(jnp.float32) / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        descending = jax.lax.top_k(logits, vocab)[0]
        probs = jax.nn.softmax(descending, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        threshold = jnp.min(jnp.where(mass_before < top_p, descending, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def constrain(scores, t, settings: GenerationSettings):
    """[batch, vocab] logits or log-probs with the suppressed ids at -inf, and only the forced EOS possible at the last
    step: transformers' NoBadWords (single tokens) and ForcedEOSToken processors."""
    if settings.suppress_token_ids:
        scores = scores.at[:, jnp.asarray(settings.suppress_token_ids)].set(-jnp.inf)
    if settings.forced_eos_token_id is not None:
        forced = jnp.full_like(scores, -jnp.inf).at[:, settings.forced_eos_token_id].set(0.0)
        scores = jnp.where(t == settings.max_new_tokens - 1, forced, scores)
    return scores


def sample_token(logits, key, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """[batch, vocab] logits -> [batch] token ids drawn from the filtered distribution."""
    return jax.random.categorical(key, filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p))


class _Decoder:
    """The two model shapes behind one interface: `start` fills the cache with the prompt, `step` feeds one token.

    `rows` is per-row state that `step` needs: the next position (GPT) or the source mask (the encoder's output is in
    the cache as each layer's cross-attention keys and values).
    """

    def __init__(self, model, variables, settings: GenerationSettings):
        self.model, self.variables, self.settings = model, variables, settings
        self.seq2seq = isinstance(model, EncoderDecoderTransformer)

    def start(self, input_ids, attention_mask):
        """-> prompt [batch, prompt_length], logits [batch, vocab] for the first new token, cache, rows."""
        model, batch = self.model, input_ids.shape[0]
        if self.seq2seq:
            encoded = model.apply(self.variables, input_ids, attention_mask, method="encode")
            prompt = jnp.full((batch, 1), self.settings.decoder_start_token_id, jnp.int32)
            cache = init_cache(model, batch, 1 + self.settings.max_new_tokens, input_ids.shape[1])
            out, mutated = model.apply({**self.variables, "cache": cache}, prompt, encoded, attention_mask,
                                       method="decode", decode=True, mutable=["cache"])
            return prompt, out.logits[:, -1], mutated["cache"], attention_mask
        cache = init_cache(model, batch, input_ids.shape[1] + self.settings.max_new_tokens)
        positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
        out, mutated = model.apply({**self.variables, "cache": cache}, input_ids, attention_mask=attention_mask,
                                   position_ids=positions, decode=True, mutable=["cache"])
        # left padding puts every row's last real token in the last column
        return input_ids, out.logits[:, -1], mutated["cache"], jnp.sum(attention_mask, axis=1)

    def step(self, tokens, cache, rows):
        """tokens [batch] -> logits [batch, vocab], cache, rows."""
        model, variables = self.model, {**self.variables, "cache": cache}
        tokens = tokens[:, None]
        if self.seq2seq:
            out, mutated = model.apply(variables, tokens, None, rows, method="decode", decode=True, mutable=["cache"])
            return out.logits[:, -1], mutated["cache"], rows
        out, mutated = model.apply(variables, tokens, position_ids=rows[:, None], decode=True, mutable=["cache"])
        return out.logits[:, -1], mutated["cache"], rows + 1

    def cache_batch_axes(self, length, source_length):
        """The batch axis of every cache leaf (-1 for the shared index): found by comparing batch sizes 1 and 2."""
        one, two = (jax.eval_shape(lambda b=b: init_cache(self.model, b, length, source_length)) for b in (1, 2))
        return jax.tree.map(lambda a, b: next((i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y), -1),
                            one, two)


def _take_rows(tree, axes, rows):
    """Gathers batch rows `rows` [new_batch] from every leaf of `tree` along its batch axis in `axes`."""
    return jax.tree.map(lambda x, axis: x if axis < 0 else jnp.take(x, rows, axis=axis), tree, axes)


def _generate(variables, input_ids, attention_mask, key, *, model, settings: GenerationSettings):
    decoder = _Decoder(model, variables, settings)
    if settings.method == "beam":
        return _beam_search(decoder, input_ids, attention_mask, settings)
    return _greedy_or_sample(decoder, input_ids, attention_mask, key, settings)


_generate_jit = jax.jit(_generate, static_argnames=("model", "settings"))


def _greedy_or_sample(decoder: _Decoder, input_ids, attention_mask, key, settings: GenerationSettings):
    prompt, logits, cache, rows = decoder.start(input_ids, attention_mask)
    batch, prompt_length = prompt.shape
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    sequences = jnp.full((batch, prompt_length + settings.max_new_tokens), settings.pad_token_id, jnp.int32)
    sequences = sequences.at[:, :prompt_length].set(prompt)

    def choose(t, logits, sequences, finished):
        logits = constrain(logits.astype(jnp.float32), t, settings)
        if settings.method == "greedy":
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            token = sample_token(logits, jax.random.fold_in(key, t), temperature=settings.temperature,
                                 top_k=settings.top_k, top_p=settings.top_p).astype(jnp.int32)
        token = jnp.where(finished, settings.pad_token_id, token)
        sequences = jax.lax.dynamic_update_slice(sequences, token[:, None], (0, prompt_length + t))
        return sequences, finished | jnp.isin(token, eos)

    sequences, finished = choose(0, logits, sequences, jnp.zeros((batch,), bool))

    def running(state):
        t, _, finished, _, _ = state
        return (t < settings.max_new_tokens) & ~jnp.all(finished)

    def body(state):
        t, sequences, finished, cache, rows = state
        logits, cache, rows = decoder.step(sequences[:, prompt_length + t - 1], cache, rows)
        sequences, finished = choose(t, logits, sequences, finished)
        return t + 1, sequences, finished, cache, rows

    _, sequences, _, _, _ = jax.lax.while_loop(running, body, (jnp.int32(1), sequences, finished, cache, rows))
    return GenerateOutput(sequences=sequences)


def _beam_search(decoder: _Decoder, input_ids, attention_mask, settings: GenerationSettings):
    """transformers' vectorised beam search (`GenerationMixin._beam_search`), step for step, over a KV cache."""
    beams, new_tokens, penalty = settings.num_beams, settings.max_new_tokens, settings.length_penalty
    candidates = max(2, 1 + len(settings.eos_token_ids)) * beams  # enough that `beams` of them do not end
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    # generated_length ** length_penalty in float64 then rounded once, as Python computes it for transformers
    length_norm = jnp.asarray(np.arange(1, new_tokens + 1, dtype=np.float64) ** penalty, jnp.float32)

    prompt, logits, cache, rows = decoder.start(input_ids, attention_mask)
    batch, prompt_length = prompt.shape
    # The prompt was run once per row; every beam of a row starts from that row's cache.
    axes = decoder.cache_batch_axes(prompt_length + new_tokens, input_ids.shape[1])
    repeat = jnp.repeat(jnp.arange(batch), beams)
    cache, logits, rows = _take_rows(cache, axes, repeat), logits[repeat], jax.tree.map(lambda r: r[repeat], rows)

    length = prompt_length + new_tokens
    running_sequences = jnp.full((batch, beams, length), settings.pad_token_id, jnp.int32)
    running_sequences = running_sequences.at[:, :, :prompt_length].set(prompt[:, None])
    state = dict(
        running_sequences=running_sequences,
        running_scores=jnp.zeros((batch, beams)).at[:, 1:].set(NEG),  # only the first beam may extend at step 0
        sequences=running_sequences,  # the bank of finished hypotheses
        scores=jnp.full((batch, beams), NEG),
        finished=jnp.zeros((batch, beams), bool),
        improvable=jnp.ones((batch,), bool),
        done=jnp.array(False),
    )

    def gather(x, index):  # x [batch, n, ...], index [batch, k] -> [batch, k, ...]
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    def choose(t, logits, cache, s):
        vocab = logits.shape[-1]
        log_probs = constrain(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), t, settings)
        log_probs = log_probs.reshape(batch, beams, vocab)
        log_probs = (log_probs + s["running_scores"][:, :, None]).reshape(batch, beams * vocab)
        top_scores, top_index = jax.lax.top_k(log_probs, candidates)  # [batch, candidates]
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        top_sequences = gather(s["running_sequences"], parent).at[:, :, prompt_length + t].set(token)
        ends = jnp.isin(token, eos) | (t + 1 >= new_tokens)

        # the best `beams` candidates that go on
        alive_scores = top_scores + ends * NEG
        keep = jax.lax.top_k(alive_scores, beams)[1]
        running_sequences, running_scores = gather(top_sequences, keep), gather(alive_scores, keep)
        parent_rows = (jnp.arange(batch)[:, None] * beams + gather(parent, keep)).reshape(-1)

        # the bank takes finished candidates among the top `beams`, while it is open and can still improve
        just_finished = ends & (jnp.arange(candidates) < beams)[None]
        bank_full = jnp.all(s["finished"], axis=-1, keepdims=True) & (settings.early_stopping is True)
        new_scores = (top_scores / length_norm[t] + bank_full * NEG + (~s["improvable"])[:, None] * NEG
                      + (~just_finished) * NEG)
        best = jax.lax.top_k(jnp.concatenate([s["scores"], new_scores], axis=1), beams)[1]
        sequences = gather(jnp.concatenate([s["sequences"], top_sequences], axis=1), best)
        scores = gather(jnp.concatenate([s["scores"], new_scores], axis=1), best)
        finished = gather(jnp.concatenate([s["finished"], just_finished], axis=1), best)

        # can a running beam still beat the worst banked hypothesis?
        best_length = new_tokens if settings.early_stopping == "never" and penalty > 0 else t + 1
        best_possible = running_scores[:, 0] / length_norm[best_length - 1]
        worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), NEG)
        improvable = s["improvable"] & jnp.any(best_possible[:, None] > worst_finished, axis=-1)
        open_bank = ~(jnp.all(finished) & (settings.early_stopping is True))
        done = ~(jnp.any(improvable) & open_bank & ~jnp.all(ends))
        s = dict(running_sequences=running_sequences, running_scores=running_scores, sequences=sequences,
                 scores=scores, finished=finished, improvable=improvable, done=done)
        return _take_rows(cache, axes, parent_rows), s

    cache, state = choose(0, logits, cache, state)

    def body(carry):
        t, cache, rows, s = carry
        tokens = s["running_sequences"][:, :, prompt_length + t - 1].reshape(-1)
        logits, cache, rows = decoder.step(tokens, cache, rows)
        cache, s = choose(t, logits, cache, s)
        return t + 1, cache, rows, s

    _, _, _, state = jax.lax.while_loop(lambda carry: ~carry[3]["done"], body, (jnp.int32(1), cache, rows, state))
    return GenerateOutput(sequences=state["sequences"][:, 0], scores=state["scores"][:, 0])
