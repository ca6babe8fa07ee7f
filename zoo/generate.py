"""Autoregressive generation for zoo's causal LMs (GPT) and encoder-decoders (Vaswani, Marian).

`generate` is one `jax.jit` over a `lax.while_loop`: the prompt fills a fixed-size KV cache in one call (prompt
length + `max_new_tokens` slots), then each iteration feeds one token per row. Nothing is traced per token, and a
new prompt of the same padded shape reuses the compiled loop. The loop stops as soon as every row has finished.
An encoder-decoder encodes the source once, and its first decoder call stores every layer's cross-attention keys
and values of the source in the cache: a step projects only its own token.

The searches know nothing about the model: each model shape (`start_decoder_only`, `start_encoder_decoder`) runs the
prompt and gives one `tokens_to_logits(ids, cache) -> (logits, cache)` for the steps after it. Beam search reorders
the cache's rows along the batch axis that `CACHE_LAYOUT` declares for each cache variable.

Beam search follows the semantics of transformers' `generate`: a hypothesis scores sum(log-probs) /
generated_length ** length_penalty, finished hypotheses are kept in a bank of `num_beams` per row, and
`early_stopping` is True (stop once the bank is full), False (stop when the best running beam, scored at the current
length, cannot beat the worst banked one) or "never" (the same bound at the longest reachable length).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from zoo.axes import BATCH, HEAD_DIM, HEADS, LENGTH
from zoo.models import EncoderDecoderTransformer, Transformer
from zoo.registry import init_cache

METHODS = ("greedy", "sample", "beam")
NEG = -1.0e9  # the score of an impossible beam, as in transformers (finite, so sums never turn into NaN)
_FROM_CONFIG = object()

# The logical axes of every decoding-cache variable, by its name: the attention layers' (zoo/layers.py) and
# DecodeState's (zoo/models.py). A scanned layer stack puts a layer axis in front, so axes count from the last one.
CACHE_LAYOUT = {
    "key": (BATCH, HEADS, LENGTH, HEAD_DIM),  # self-attention: the cache slots; cross: the source tokens
    "value": (BATCH, HEADS, LENGTH, HEAD_DIM),
    "key_mask": (BATCH, LENGTH),  # which slots hold a real token
    "key_positions": (LENGTH,),  # the position each slot holds: the same in every row
    "index": (),  # the next column to fill: the same in every row
}

TokensToLogits = Callable[[jax.Array, dict], tuple[jax.Array, dict]]


@flax.struct.dataclass
class GenerateOutput:
    """sequences: [batch, prompt_length + max_new_tokens], the prompt (for an encoder-decoder, the decoder start
    token) then the new tokens, `pad_token_id` after EOS. scores: beam search only, [batch], the returned
    hypothesis' sum of log-probs / generated_length ** length_penalty."""

    sequences: jax.Array
    scores: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Everything `generate` compiles for: a change here is a new compilation, a new prompt is not.

    Raises ValueError naming the field for a setting out of range, before anything is traced. The sampling
    settings are checked only for "sample", which alone uses them.
    """

    method: str
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    num_beams: int = 1  # 1 unless method is "beam"
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_ids: tuple = ()  # empty: never stop before max_new_tokens
    pad_token_id: int = 0
    decoder_start_token_id: Optional[int] = None  # an encoder-decoder's first decoder token; None for GPT
    suppress_token_ids: tuple = ()
    forced_eos_token_id: Optional[int] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.method == "sample":
            if self.temperature <= 0:
                raise ValueError(f"temperature must be positive, got {self.temperature}")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0 (0: no top-k filter), got {self.top_k}")
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1] (1: no nucleus filter), got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be positive, got {self.num_beams}")
        if self.method != "beam" and self.num_beams != 1:
            raise ValueError(f"num_beams={self.num_beams} needs method='beam', got method={self.method!r}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        for name in ("eos_token_ids", "suppress_token_ids"):
            ids = getattr(self, name)
            if not isinstance(ids, tuple) or not all(isinstance(i, int) for i in ids):
                raise ValueError(f"{name} must be a tuple of ints, got {ids!r}")


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
      ValueError: for a model without a generating head, a method or setting out of range (`GenerationSettings`),
        a missing key or decoder start token, a total length beyond the model's max_length, or (when the mask is a
        concrete array) right-padded GPT prompts.
    """
    cfg = model.config
    seq2seq = isinstance(model, EncoderDecoderTransformer) and model.task == "seq2seq"
    if not seq2seq and not (isinstance(model, Transformer) and model.task == "causal_lm"):
        raise ValueError(f"generate needs a causal_lm Transformer or a seq2seq EncoderDecoderTransformer, got "
                         f"{type(model).__name__} with task {model.task!r}")
    if method == "sample" and key is None:
        raise ValueError('method="sample" needs a key, e.g. key=jax.random.key(0)')
    if seq2seq:
        decoder_start_token_id = (cfg.decoder_start_token_id if decoder_start_token_id is None
                                  else decoder_start_token_id)
        if decoder_start_token_id is None:
            raise ValueError("an encoder-decoder needs decoder_start_token_id (argument or config)")
    eos = cfg.eos_token_id if eos_token_id is _FROM_CONFIG else eos_token_id
    eos = () if eos is None else (int(eos),) if np.ndim(eos) == 0 else tuple(int(e) for e in eos)
    settings = GenerationSettings(
        method=method, max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=int(top_k),
        top_p=float(top_p), num_beams=int(num_beams) if method == "beam" else 1, length_penalty=float(length_penalty),
        early_stopping=early_stopping, eos_token_ids=eos,
        pad_token_id=int(cfg.pad_token_id if pad_token_id is None else pad_token_id),
        decoder_start_token_id=int(decoder_start_token_id) if seq2seq else None,
        suppress_token_ids=tuple(int(i) for i in suppress_token_ids),
        forced_eos_token_id=None if forced_eos_token_id is None else int(forced_eos_token_id))
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {attention_mask.shape} but input_ids has shape {input_ids.shape}")
    if not seq2seq and not isinstance(attention_mask, jax.core.Tracer) and _is_right_padded(np.asarray(attention_mask)):
        raise ValueError("GPT prompts must be left-padded: attention_mask has a 0 after a 1 in some row")
    prompt_length = 1 if seq2seq else input_ids.shape[1]
    if prompt_length + settings.max_new_tokens > cfg.max_length:
        raise ValueError(f"prompt length {prompt_length} + max_new_tokens {settings.max_new_tokens} is longer than "
                         f"the model's max_length {cfg.max_length} positions")
    if method == "beam" and max(2, 1 + len(eos)) > cfg.vocab_size:  # each beam keeps that many candidates per step
        raise ValueError(f"the vocabulary of {cfg.vocab_size} is too small for beam search with {len(eos)} EOS ids")
    for name, ids in (("suppress_token_ids", settings.suppress_token_ids),
                      ("forced_eos_token_id", () if forced_eos_token_id is None else (forced_eos_token_id,))):
        if any(not 0 <= i < cfg.vocab_size for i in ids):
            raise ValueError(f"{name}={ids} has an id outside the vocabulary of {cfg.vocab_size}")
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


def cache_batch_axis(path: tuple[str, ...], ndim: int) -> Optional[int]:
    """The batch axis (negative: counted from the last) of the cache variable at `path` with `ndim` axes, as
    `CACHE_LAYOUT` declares it; None for a variable that all rows share.

    Raises ValueError for a variable the layout does not declare, or one with fewer axes than it declares.
    """
    layout = CACHE_LAYOUT.get(path[-1])
    if layout is None or ndim < len(layout):
        raise ValueError(f"the decoding cache variable {'/'.join(path)} ({ndim} axes) is not one that CACHE_LAYOUT "
                         f"declares: {CACHE_LAYOUT}")
    return layout.index(BATCH) - len(layout) if BATCH in layout else None


def take_cache_rows(cache: dict, rows: jax.Array) -> dict:
    """The cache of batch rows `rows` ([new_batch] indices): every variable gathered along its declared batch axis
    (a variable with logical-axis metadata keeps it)."""
    taken = {}
    for path, variable in traverse_util.flatten_dict(cache).items():
        axis = cache_batch_axis(path, jnp.ndim(nn.unbox(variable)))
        taken[path] = variable if axis is None else jax.tree.map(lambda x: jnp.take(x, rows, axis=axis), variable)
    return traverse_util.unflatten_dict(taken)


def spread_over_beams(beams: int, cache: dict, *per_row: jax.Array):
    """(cache, *per_row) with every batch row repeated for each of its `beams` beams, a row's beams adjacent: every
    beam of a row starts from that row's prompt pass. `per_row` are [batch, ...] arrays; unchanged for one beam."""
    if beams == 1:
        return (cache, *per_row)
    rows = jnp.repeat(jnp.arange(per_row[0].shape[0]), beams)
    return (take_cache_rows(cache, rows), *(x[rows] for x in per_row))


@dataclasses.dataclass(frozen=True)
class DecodingStart:
    """What a model shape gives the search after the prompt pass, with batch * beams rows (a row's beams adjacent).

    tokens_to_logits: (ids [batch * beams], cache) -> (logits [batch * beams, vocab], cache): one step, each row's
      token placed after the tokens before it.
    """

    prompt: jax.Array  # [batch, prompt_length]: what every sequence starts with
    logits: jax.Array  # [batch * beams, vocab]: for the first new token
    cache: dict  # the model's decoding cache after the prompt pass
    tokens_to_logits: TokensToLogits


def start_decoder_only(model, variables, input_ids, attention_mask, settings: GenerationSettings) -> DecodingStart:
    """A causal LM: the left-padded prompts [batch, length] fill the cache in one call. A token's position is the
    number of real tokens before it in its row, so a row's padding moves nothing."""
    batch, prompt_length = input_ids.shape
    cache = init_cache(model, batch, prompt_length + settings.max_new_tokens)
    positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
    out, mutated = model.apply({**variables, "cache": cache}, input_ids, attention_mask=attention_mask,
                               position_ids=positions, decode=True, mutable=["cache"])
    # left padding puts every row's last real token in the last column, and its padding before the first
    padding = prompt_length - jnp.sum(attention_mask, axis=1)  # [batch]
    cache, logits, padding = spread_over_beams(settings.num_beams, mutated["cache"], out.logits[:, -1], padding)

    def tokens_to_logits(ids, cache):
        column = cache["decode_state"]["index"]  # DecodeState's next column: where these tokens go
        out, mutated = model.apply({**variables, "cache": cache}, ids[:, None],
                                   position_ids=(column - padding)[:, None], decode=True, mutable=["cache"])
        return out.logits[:, -1], mutated["cache"]

    return DecodingStart(input_ids, logits, cache, tokens_to_logits)


def start_encoder_decoder(model, variables, input_ids, attention_mask,
                          settings: GenerationSettings) -> DecodingStart:
    """An encoder-decoder: the source [batch, source_length] is encoded once, and the decoder's first call (the
    start token) stores each layer's cross-attention keys and values of it in the cache; a step reads them there."""
    batch, source_length = input_ids.shape
    encoded = model.apply(variables, input_ids, attention_mask, method="encode")
    prompt = jnp.full((batch, 1), settings.decoder_start_token_id, jnp.int32)
    cache = init_cache(model, batch, 1 + settings.max_new_tokens, source_length)
    out, mutated = model.apply({**variables, "cache": cache}, prompt, encoded, attention_mask, method="decode",
                               decode=True, mutable=["cache"])
    cache, logits, source_mask = spread_over_beams(settings.num_beams, mutated["cache"], out.logits[:, -1],
                                                   attention_mask)

    def tokens_to_logits(ids, cache):
        out, mutated = model.apply({**variables, "cache": cache}, ids[:, None], None, source_mask, method="decode",
                                   decode=True, mutable=["cache"])
        return out.logits[:, -1], mutated["cache"]

    return DecodingStart(prompt, logits, cache, tokens_to_logits)


def _generate(variables, input_ids, attention_mask, key, *, model, settings: GenerationSettings):
    start_model = start_encoder_decoder if isinstance(model, EncoderDecoderTransformer) else start_decoder_only
    start = start_model(model, variables, input_ids, attention_mask, settings)
    if settings.method == "beam":
        return _beam_search(start, settings)
    return _greedy_or_sample(start, key, settings)


_generate_jit = jax.jit(_generate, static_argnames=("model", "settings"))


def _greedy_or_sample(start: DecodingStart, key, settings: GenerationSettings):
    batch, prompt_length = start.prompt.shape
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    sequences = jnp.full((batch, prompt_length + settings.max_new_tokens), settings.pad_token_id, jnp.int32)
    sequences = sequences.at[:, :prompt_length].set(start.prompt)

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

    sequences, finished = choose(0, start.logits, sequences, jnp.zeros((batch,), bool))

    def running(state):
        t, _, finished, _ = state
        return (t < settings.max_new_tokens) & ~jnp.all(finished)

    def body(state):
        t, sequences, finished, cache = state
        logits, cache = start.tokens_to_logits(sequences[:, prompt_length + t - 1], cache)
        sequences, finished = choose(t, logits, sequences, finished)
        return t + 1, sequences, finished, cache

    _, sequences, _, _ = jax.lax.while_loop(running, body, (jnp.int32(1), sequences, finished, start.cache))
    return GenerateOutput(sequences=sequences)


@flax.struct.dataclass
class BeamState:
    """Beam search between two steps: the live beams, the bank of finished hypotheses, and whether to go on."""

    step: jax.Array  # []: the new token the next step chooses (0 is the first)
    cache: dict  # the model's decoding cache, rows [batch * beams] in the order of the live beams
    running_sequences: jax.Array  # [batch, beams, length]: the live beams, the prompt then their tokens
    running_scores: jax.Array  # [batch, beams]: their sums of log-probs (NEG: a beam that may not extend)
    sequences: jax.Array  # [batch, beams, length]: the bank of finished hypotheses, best first
    scores: jax.Array  # [batch, beams]: their sum(log-probs) / generated_length ** length_penalty (NEG: empty)
    finished: jax.Array  # [batch, beams] bool: the bank's slot holds a hypothesis
    improvable: jax.Array  # [batch] bool: a live beam of the row may still beat its worst banked hypothesis
    done: jax.Array  # [] bool: the search is over


def _beam_search(start: DecodingStart, settings: GenerationSettings):
    """transformers' vectorised beam search (`GenerationMixin._beam_search`), step for step, over a KV cache."""
    beams, new_tokens, penalty = settings.num_beams, settings.max_new_tokens, settings.length_penalty
    candidates = max(2, 1 + len(settings.eos_token_ids)) * beams  # enough that `beams` of them do not end
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    # generated_length ** length_penalty in float64 then rounded once, as Python computes it for transformers
    length_norm = jnp.asarray(np.arange(1, new_tokens + 1, dtype=np.float64) ** penalty, jnp.float32)
    batch, prompt_length = start.prompt.shape
    running_sequences = jnp.full((batch, beams, prompt_length + new_tokens), settings.pad_token_id, jnp.int32)
    running_sequences = running_sequences.at[:, :, :prompt_length].set(start.prompt[:, None])

    def gather(x, index):  # x [batch, n, ...], index [batch, k] -> [batch, k, ...]
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    def choose(logits, s: BeamState) -> BeamState:
        """The state after choosing token `s.step` of every beam from `logits` [batch * beams, vocab]."""
        t, vocab = s.step, logits.shape[-1]
        log_probs = constrain(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), t, settings)
        log_probs = log_probs.reshape(batch, beams, vocab)
        log_probs = (log_probs + s.running_scores[:, :, None]).reshape(batch, beams * vocab)
        top_scores, top_index = jax.lax.top_k(log_probs, candidates)  # [batch, candidates]
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        top_sequences = gather(s.running_sequences, parent).at[:, :, prompt_length + t].set(token)
        ends = jnp.isin(token, eos) | (t + 1 >= new_tokens)

        # the best `beams` candidates that go on
        alive_scores = top_scores + ends * NEG
        keep = jax.lax.top_k(alive_scores, beams)[1]
        running_sequences, running_scores = gather(top_sequences, keep), gather(alive_scores, keep)
        parent_rows = (jnp.arange(batch)[:, None] * beams + gather(parent, keep)).reshape(-1)

        # the bank takes finished candidates among the top `beams`, while it is open and can still improve
        just_finished = ends & (jnp.arange(candidates) < beams)[None]
        bank_full = jnp.all(s.finished, axis=-1, keepdims=True) & (settings.early_stopping is True)
        new_scores = (top_scores / length_norm[t] + bank_full * NEG + (~s.improvable)[:, None] * NEG
                      + (~just_finished) * NEG)
        best = jax.lax.top_k(jnp.concatenate([s.scores, new_scores], axis=1), beams)[1]
        sequences = gather(jnp.concatenate([s.sequences, top_sequences], axis=1), best)
        scores = gather(jnp.concatenate([s.scores, new_scores], axis=1), best)
        finished = gather(jnp.concatenate([s.finished, just_finished], axis=1), best)

        # can a running beam still beat the worst banked hypothesis?
        best_length = new_tokens if settings.early_stopping == "never" and penalty > 0 else t + 1
        best_possible = running_scores[:, 0] / length_norm[best_length - 1]
        worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), NEG)
        improvable = s.improvable & jnp.any(best_possible[:, None] > worst_finished, axis=-1)
        open_bank = ~(jnp.all(finished) & (settings.early_stopping is True))
        done = ~(jnp.any(improvable) & open_bank & ~jnp.all(ends))
        return BeamState(step=t + 1, cache=take_cache_rows(s.cache, parent_rows),
                         running_sequences=running_sequences, running_scores=running_scores, sequences=sequences,
                         scores=scores, finished=finished, improvable=improvable, done=done)

    state = BeamState(
        step=jnp.int32(0),
        cache=start.cache,
        running_sequences=running_sequences,
        running_scores=jnp.zeros((batch, beams)).at[:, 1:].set(NEG),  # only the first beam may extend at step 0
        sequences=running_sequences,
        scores=jnp.full((batch, beams), NEG),
        finished=jnp.zeros((batch, beams), bool),
        improvable=jnp.ones((batch,), bool),
        done=jnp.array(False),
    )
    state = choose(start.logits, state)

    def body(s: BeamState) -> BeamState:
        tokens = s.running_sequences[:, :, prompt_length + s.step - 1].reshape(-1)
        logits, cache = start.tokens_to_logits(tokens, s.cache)
        return choose(logits, s.replace(cache=cache))

    state = jax.lax.while_loop(lambda s: ~s.done, body, state)
    return GenerateOutput(sequences=state.sequences[:, 0], scores=state.scores[:, 0])
