"""The two model shapes every family is made of: one stack (BERT, GPT, ALBERT) and encoder-decoder (Vaswani, Marian).

Which family a model belongs to is only its `Config`; the `task` picks the head.
"""

from __future__ import annotations

from typing import ClassVar, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from zoo.attention import cache_length, cache_slots, rolling_cache
from zoo.config import Config
from zoo.embeddings import Embeddings, padding_offset_position_ids, token_embedding
from zoo.heads import ENCODER_DECODER_HEADS, ENCODER_ONLY, HEADS, HeadInputs, Pooler, VocabProjection, has_pooler
from zoo.layers import LayerStack, layer_norm
from zoo.masks import AttentionMask


@flax.struct.dataclass
class ModelOutput:
    """Named outputs, in the names of the public checkpoints; a field a task does not produce is None."""

    last_hidden_state: jax.Array
    pooled_output: Optional[jax.Array] = None
    logits: Optional[jax.Array] = None  # mlm, causal_lm, seq2seq, sequence and token classification
    prediction_logits: Optional[jax.Array] = None  # pretraining: masked-token logits
    seq_relationship_logits: Optional[jax.Array] = None  # pretraining: next-sentence (BERT) or order (ALBERT)
    start_logits: Optional[jax.Array] = None  # question answering
    end_logits: Optional[jax.Array] = None
    encoder_last_hidden_state: Optional[jax.Array] = None  # encoder-decoder
    vocab_projection: Optional[VocabProjection] = None  # in place of `logits` when called with logits_chunk > 0


def check_inputs(cfg: Config, input_ids, *masks, name: str = "input_ids", decode: bool = False) -> None:
    """Shape checks at trace time, before any compilation: a ValueError names the numbers."""
    if input_ids.ndim != 2:
        raise ValueError(f"{name} must be [batch, length], got shape {input_ids.shape}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[1] > cfg.max_tokens and not decode:
        held = (f"{cfg.max_tokens} tokens (max_length {cfg.max_length} positions, numbered from past pad_token_id "
                f"{cfg.pad_token_id})" if cfg.padding_offset_positions else f"max_length {cfg.max_length} positions")
        raise ValueError(f"{name} has length {input_ids.shape[1]}, longer than the model's {held}")
    for mask_name, mask in masks:
        if mask is not None and tuple(mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"{mask_name} has shape {tuple(mask.shape)} but {name} has shape "
                             f"{tuple(input_ids.shape)}; they must match")


class DecodeState(nn.Module):
    """Where incremental decoding stands: the next position, and which position each cache slot holds, if a real one.

    The call that creates the cache (see `zoo.init_cache`) sizes it from its input and behaves as a plain causal
    pass. A later call gives its tokens the next positions and returns (the mask of the new queries over the keys
    they attend, their positions, the cache slots to write them to); the keys are the cache with the new tokens
    written, or for a rolling cache the cache before the call followed by the new tokens (`rolling_cache`).
    """

    config: Config

    @nn.compact
    def __call__(self, attention_mask):  # attention_mask [batch, new_length]
        batch, length = attention_mask.shape
        slots = cache_length(self.config, length)
        initialized = self.has_variable("cache", "index")
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        key_mask = self.variable("cache", "key_mask", lambda: jnp.zeros((batch, slots), bool))
        key_positions = self.variable("cache", "key_positions", lambda: jnp.zeros((slots,), jnp.int32))
        if not initialized:
            mask = AttentionMask.from_padding(attention_mask, causal=True)
            return mask, jnp.broadcast_to(jnp.arange(length), (batch, length)), None
        positions = index.value + jnp.arange(length)
        before = key_mask.value, key_positions.value
        write = cache_slots(self.config, key_mask.value.shape[1], positions)
        key_mask.value = key_mask.value.at[:, write].set(attention_mask != 0, mode="drop")
        key_positions.value = key_positions.value.at[write].set(positions, mode="drop")
        index.value = index.value + length
        if rolling_cache(self.config):  # the keys: the cache before this call's writes, then the new tokens
            keys = jnp.concatenate([before[0], attention_mask != 0], axis=1), jnp.concatenate([before[1], positions])
        else:  # the keys: the cache after the writes (see MultiHeadAttention._update_cache)
            keys = key_mask.value, key_positions.value
        mask = AttentionMask(key_mask=keys[0], query_positions=positions, key_positions=keys[1], causal=True)
        return mask, jnp.broadcast_to(positions, (batch, length)), write


class Transformer(nn.Module):
    """One stack of layers with a task head: BERT, ALBERT (bidirectional) and GPT (`causal`) are configs of this.

    Call as `model.apply(variables, input_ids, attention_mask=None, token_type_ids=None, ...)`.

    Args (of `__call__`):
      input_ids: [batch, length] int.
      attention_mask: [batch, length], 1 at real tokens and 0 at padding.
      token_type_ids: [batch, length], segment A/B for models with `type_vocab_size`.
      position_ids: [batch, length]; defaults to 0..length-1 (per-document positions for packed rows).
      segment_ids: [batch, length]; packed documents with different ids never attend to each other.
      deterministic: False enables dropout (needs a `dropout` rng).
      decode: incremental decoding with a KV cache (causal models; variables from `zoo.init_cache`, the `cache`
        collection mutable).
      mlm_positions: [batch, predictions] int; the MLM head then runs only at these positions (BERT's
        `masked_lm_positions`), so the vocabulary projection costs predictions, not length, rows.
      logits_chunk: > 0 (causal_lm): no logits; `vocab_projection` says how to make them, for a loss that makes
        them this many positions of every row at a time (train.losses.chunked_cross_entropy).
    Returns:
      `ModelOutput`. Raises ValueError for inputs whose shapes do not fit the model.
    """

    config: Config
    task: Optional[str] = None
    heads: ClassVar[Mapping] = HEADS  # what each task puts on the stack

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
                 mlm_positions=None, *, deterministic: bool = True, decode: bool = False, logits_chunk: int = 0):
        cfg = self.config
        check_inputs(cfg, input_ids, ("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                     ("position_ids", position_ids), ("segment_ids", segment_ids), decode=decode)
        if token_type_ids is not None and not cfg.type_vocab_size:
            raise ValueError("token_type_ids given, but this model has no token-type embedding (type_vocab_size=0)")
        if decode and not cfg.causal:
            raise ValueError("decode=True needs a causal model")
        batch, length = input_ids.shape
        write_slots = None
        if not decode:
            # No attention_mask means no key mask at all, which lets cuDNN's kernel skip its padding check.
            mask = AttentionMask.from_padding(attention_mask, causal=cfg.causal, segment_ids=segment_ids)
            default_positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
            if cfg.padding_offset_positions:
                default_positions = padding_offset_position_ids(input_ids, cfg.pad_token_id)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), jnp.int32)
        if decode:
            mask, default_positions, write_slots = DecodeState(cfg, name="decode_state")(attention_mask)
        positions = default_positions if position_ids is None else position_ids

        tokens = token_embedding(cfg)
        x = Embeddings(cfg, tokens, name="embeddings")(input_ids, positions, token_type_ids,
                                                       deterministic=deterministic)
        x = LayerStack(cfg, cfg.num_layers, name="encoder")(x, mask, cache_slots=write_slots, positions=positions,
                                                            deterministic=deterministic, decode=decode)
        if cfg.final_norm:
            x = layer_norm(cfg, name="final_norm")(x)
            x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic or not cfg.final_norm_dropout)
        return self.head(x, tokens, attention_mask, deterministic, mlm_positions, logits_chunk)

    def head(self, x, tokens, attention_mask, deterministic, mlm_positions=None, logits_chunk: int = 0):
        cfg = self.config
        if self.task not in self.heads:
            raise ValueError(f"unknown task {self.task!r} for a single-stack model; known: {tuple(self.heads)}")
        head = self.heads[self.task]
        pooled = Pooler(cfg, name="pooler")(x, attention_mask) if has_pooler(cfg, self.task) else None
        dropout = nn.Dropout(cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate,
                             deterministic=deterministic)
        if logits_chunk and self.task != "causal_lm":
            raise ValueError(f"logits_chunk={logits_chunk} needs an LM head over every position (causal_lm); task "
                             f"{self.task!r} has none")
        outputs = head.build(HeadInputs(cfg, x, pooled, tokens, dropout, mlm_positions, logits_chunk))
        return ModelOutput(last_hidden_state=x, pooled_output=pooled, **outputs)


def shift_tokens_right(input_ids, decoder_start_token_id: int):
    """BART's decoder inputs made from its inputs: decoder_start_token_id, then input_ids less their last token."""
    start = jnp.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
    return jnp.concatenate([start, input_ids[:, :-1]], axis=1)


class EncoderDecoderTransformer(nn.Module):
    """Vaswani et al.'s encoder-decoder with one token embedding shared by both stacks and the output projection.

    `task` picks the head from `zoo.heads.ENCODER_DECODER_HEADS`; "encoder" is the encoder stack alone
    (`__call__(input_ids, attention_mask=...)`), with the same parameter names (T5EncoderModel).

    `__call__(input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None)` runs both stacks;
    `decoder_input_ids=None` means BART's: `shift_tokens_right(input_ids)`, with no decoder padding mask (a ValueError
    when the config has no decoder_start_token_id). `encode` and `decode` run one each (generation encodes once, then
    decodes token by token with `decode=True`).
    """

    config: Config
    task: Optional[str] = None
    heads: ClassVar[Mapping] = ENCODER_DECODER_HEADS  # what each task puts on the encoder-decoder

    def setup(self):
        cfg = self.config
        if self.task not in self.heads:
            raise ValueError(f"unknown task {self.task!r} for an encoder-decoder; known: {tuple(self.heads)}")
        self.head_spec = self.heads[self.task]
        self.tokens = token_embedding(cfg, name="token_embedding")
        self.encoder_embeddings = Embeddings(cfg, self.tokens)
        self.encoder = LayerStack(cfg, cfg.num_layers)
        if cfg.final_norm:
            self.encoder_norm = layer_norm(cfg, name="encoder_norm")
            self.final_dropout = nn.Dropout(cfg.dropout_rate)
        if self.head_spec.decoder:
            self.decoder_embeddings = Embeddings(cfg, self.tokens)
            self.decoder = LayerStack(cfg, cfg.num_decoder_layers, cross_attention=True)
            self.decode_state = DecodeState(cfg)
            if cfg.final_norm:
                self.decoder_norm = layer_norm(cfg, name="decoder_norm")
        if self.head_spec.build is not None:
            setattr(self, self.head_spec.name, self.head_spec.build(cfg, self.tokens))  # named as in the checkpoints

    def head(self, *args, **kwargs):
        return getattr(self, self.head_spec.name)(*args, **kwargs)

    def final_norm(self, norm, x, deterministic: bool):
        """A stack's final norm, then (T5's `final_norm_dropout`) dropout."""
        return self.final_dropout(norm(x), deterministic=deterministic or not self.config.final_norm_dropout)

    def __call__(self, input_ids, decoder_input_ids=None, attention_mask=None, decoder_attention_mask=None, *,
                 deterministic: bool = True, logits_chunk: int = 0):
        encoded = self.encode(input_ids, attention_mask, deterministic=deterministic)
        if not self.head_spec.decoder:
            if decoder_input_ids is not None:
                raise ValueError(f"task={self.task!r} runs the encoder stack only: it takes no decoder_input_ids")
            return ModelOutput(last_hidden_state=encoded)
        if decoder_input_ids is None:
            if self.config.decoder_start_token_id is None:
                raise ValueError("decoder_input_ids=None shifts input_ids right after decoder_start_token_id, which "
                                 f"this config does not have (or use task={ENCODER_ONLY!r} for the encoder alone)")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.decoder_start_token_id)
        out = self.decode(decoder_input_ids, encoded, attention_mask, decoder_attention_mask,
                          deterministic=deterministic, logits_chunk=logits_chunk)
        if self.head_spec.build is not None and not self.head_spec.per_position:
            if decoder_input_ids.shape != input_ids.shape:
                raise ValueError(f"task {self.task!r} reads the decoder states at the tokens of input_ids: "
                                 f"decoder_input_ids {decoder_input_ids.shape} must have its shape {input_ids.shape}")
            out = out.replace(**{self.head_spec.output: self.head(out.last_hidden_state, input_ids,
                                                                 deterministic=deterministic)})
        return out.replace(encoder_last_hidden_state=encoded)

    def encode(self, input_ids, attention_mask=None, *, deterministic: bool = True):
        """[batch, source_length] ids -> [batch, source_length, hidden] encoder states."""
        cfg = self.config
        check_inputs(cfg, input_ids, ("attention_mask", attention_mask))
        batch, length = input_ids.shape
        positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        x = self.encoder_embeddings(input_ids, positions, deterministic=deterministic)
        mask = AttentionMask.from_padding(attention_mask)
        x = self.encoder(x, mask, deterministic=deterministic)
        return self.final_norm(self.encoder_norm, x, deterministic) if cfg.final_norm else x

    def decode(self, decoder_input_ids, encoded, attention_mask=None, decoder_attention_mask=None, *,
               deterministic: bool = True, decode: bool = False, logits_chunk: int = 0):
        """Decoder states (and a per-position head's output: `seq2seq`'s logits) given the encoder's; `attention_mask`
        is the source's. `logits_chunk` > 0: the LM head's `vocab_projection` in place of the logits (see
        `Transformer`).

        With `decode=True` (a cache from `zoo.init_cache`), the call given `encoded` stores every layer's
        cross-attention keys and values of the source in the cache; a later call passes `encoded=None` and reads
        them, so a generation projects the source once, not at every token. Raises ValueError for `encoded=None`
        without `decode`.
        """
        cfg = self.config
        if not self.head_spec.decoder:
            raise ValueError(f"task={self.task!r} is the encoder stack alone: it has no decoder to run")
        check_inputs(cfg, decoder_input_ids, ("decoder_attention_mask", decoder_attention_mask),
                     name="decoder_input_ids", decode=decode)
        if encoded is None and not decode:
            raise ValueError("encoded=None reads the source's keys and values from the decoding cache: it needs "
                             "decode=True")
        if (attention_mask is not None and encoded is not None
                and tuple(attention_mask.shape) != tuple(encoded.shape[:2])):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but the encoded source is "
                             f"{tuple(encoded.shape[:2])}")
        batch, length = decoder_input_ids.shape
        write_slots = None
        if decode:
            if decoder_attention_mask is None:
                decoder_attention_mask = jnp.ones((batch, length), jnp.int32)
            mask, positions, write_slots = self.decode_state(decoder_attention_mask)
        else:
            mask = AttentionMask.from_padding(decoder_attention_mask, causal=True)
            positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        cross_mask = AttentionMask.from_padding(attention_mask)
        x = self.decoder_embeddings(decoder_input_ids, positions, deterministic=deterministic)
        x = self.decoder(x, mask, encoded, cross_mask, write_slots, deterministic=deterministic, decode=decode)
        if cfg.final_norm:
            x = self.final_norm(self.decoder_norm, x, deterministic)
        if not self.head_spec.per_position:
            if logits_chunk:
                raise ValueError(f"logits_chunk={logits_chunk} needs an LM head over every position (seq2seq); task "
                                 f"{self.task!r} has none")
            return ModelOutput(last_hidden_state=x)
        if logits_chunk:
            return ModelOutput(last_hidden_state=x, vocab_projection=self.head(x, chunk=logits_chunk))
        return ModelOutput(last_hidden_state=x, **{self.head_spec.output: self.head(x)})
