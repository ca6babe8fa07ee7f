"""Task heads over a stack's hidden states: poolers, language-model heads and the fine-tuning heads; `HEADS`, the
table of what each task puts on a single stack (BERT, ALBERT, GPT), and `ENCODER_DECODER_HEADS`, the table of what
each task puts on an encoder-decoder (Vaswani, Marian, T5, BART)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from zoo.axes import BATCH, EMBED, LENGTH, VOCAB
from zoo.config import Config
from zoo.layers import ACTIVATIONS, dense, layer_norm

POOLER_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class Pooler(nn.Module):
    """A sentence vector: [CLS] through a dense and tanh (BERT; DistilBERT's ReLU: `pooler_activation`), the
    mask-aware mean, max, or both concatenated, or a decoder's state at each row's last real token ("last")."""

    config: Config

    @nn.compact
    def __call__(self, hidden, attention_mask):  # hidden [batch, length, hidden], attention_mask [batch, length]
        cfg = self.config
        if cfg.pooling == "cls":
            first = dense(cfg, cfg.hidden_size, (EMBED, None), name="dense")(hidden[:, 0])
            return POOLER_ACTIVATIONS[cfg.pooler_activation](first)
        if cfg.pooling == "last":  # LlamaForSequenceClassification: the token that has seen the whole row
            return last_token(hidden, attention_mask)
        real = (attention_mask != 0)[..., None]
        mean = mean_pool(hidden, attention_mask)
        maximum = jnp.max(jnp.where(real, hidden, jnp.finfo(hidden.dtype).min), axis=1)
        return {"mean": mean, "max": maximum, "mean_max": jnp.concatenate([mean, maximum], axis=-1)}[cfg.pooling]


def last_token(hidden, attention_mask):
    """The state at each row's last real token, left- or right-padded: [batch, length, hidden] -> [batch, hidden].

    transformers reads the last token whose id is not pad_token_id; the two agree where the padding is pad tokens.
    """
    last = jnp.argmax(jnp.arange(attention_mask.shape[1]) * (attention_mask != 0), axis=1)  # [batch]
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


def mean_pool(hidden, attention_mask):
    """The mean over real tokens: [batch, length, hidden] and [batch, length] -> [batch, hidden]."""
    real = (attention_mask != 0)[..., None]
    return jnp.sum(jnp.where(real, hidden, 0), axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1).astype(hidden.dtype)


@flax.struct.dataclass
class VocabProjection:
    """What an LM head's logits are made of: logits = (hidden * scale) @ kernel + bias, computed in `dtype`.

    A model called with `logits_chunk=n > 0` returns this (ModelOutput.vocab_projection) in place of the logits, so a
    loss can make them n positions of every row at a time (train.losses.chunked_cross_entropy) and never hold
    [tokens, vocab] logits and their gradient at once.
    """

    kernel: jax.Array  # [embed, vocab]: the output projection, or the transposed token embedding when tied
    bias: Optional[jax.Array]  # [vocab], or None
    scale: float = flax.struct.field(pytree_node=False, default=1.0)  # T5's tied 1/sqrt(d_model)
    dtype: Optional[jnp.dtype] = flax.struct.field(pytree_node=False, default=None)  # None: the inputs' type
    chunk: int = flax.struct.field(pytree_node=False, default=0)  # positions of every row per chunk of the loss

    def __call__(self, hidden):  # hidden [..., embed] -> logits [..., vocab]
        if self.scale != 1.0:
            hidden = hidden * self.scale
        hidden, kernel = nn.dtypes.promote_dtype(hidden, self.kernel, dtype=self.dtype)
        logits = jnp.dot(hidden, kernel)
        if self.bias is not None:
            logits = logits + self.bias.astype(logits.dtype)
        return logits


class Kernel(nn.Module):
    """A Dense layer's kernel alone (named "kernel", as nn.Dense names it), for a head that applies it itself."""

    shape: tuple[int, ...]
    initializer: Callable
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self):
        return self.param("kernel", self.initializer, self.shape, self.param_dtype)


class LMHead(nn.Module):
    """Projects onto the vocabulary: with the input embedding matrix when tied (GPT-2, Marian, BERT's MLM).

    `chunk` > 0: returns the `VocabProjection` instead of the logits (see there)."""

    config: Config
    tokens: nn.Embed
    bias: bool

    @nn.compact
    def __call__(self, x, chunk: int = 0):
        cfg = self.config
        if cfg.tie_word_embeddings:
            kernel = self.tokens.embedding.T  # nn.Embed.attend's product, as one matmul form for both cases
        else:
            init = nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), (EMBED, VOCAB))
            kernel = Kernel((x.shape[-1], cfg.vocab_size), init, cfg.param_dtype, name="decoder")()
        bias = None
        if self.bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (VOCAB,)),
                              (cfg.vocab_size,), cfg.param_dtype)
        projection = VocabProjection(kernel, bias, scale=cfg.hidden_size ** -0.5 if cfg.tie_word_embeddings
                                     and cfg.scale_tied_logits else 1.0, dtype=cfg.dtype, chunk=chunk)
        if chunk:
            return projection
        return nn.with_logical_constraint(projection(x), (BATCH, LENGTH, VOCAB))


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense, activation and LayerNorm (down to ALBERT's embedding size), then the tied decoder."""

    config: Config
    tokens: nn.Embed

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        h = dense(cfg, cfg.embedding_dim, (EMBED, None), name="dense")(hidden)
        h = layer_norm(cfg, name="norm")(ACTIVATIONS[cfg.activation](h))
        return LMHead(cfg, self.tokens, bias=True, name="decoder")(h)


def classifier(cfg: Config, num_outputs: int, name: str) -> nn.DenseGeneral:
    return dense(cfg, num_outputs, (EMBED, None), name=name)


class LastEosClassifier(nn.Module):
    """An encoder-decoder's sentence head (BART's classification head): the decoder state at each row's last EOS of
    `input_ids` (the last position when a row has none), through dropout, a dense and tanh, dropout, then the classes.
    """

    config: Config

    @nn.compact
    def __call__(self, hidden, input_ids, *, deterministic: bool):  # hidden [batch, length, hidden]
        cfg = self.config
        length = input_ids.shape[1]
        last_eos = length - 1 - jnp.argmax((input_ids == cfg.eos_token_id)[:, ::-1], axis=1)  # [batch]
        x = jnp.take_along_axis(hidden, last_eos[:, None, None], axis=1)[:, 0]
        dropout = nn.Dropout(cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate,
                             deterministic=deterministic)
        x = jnp.tanh(dense(cfg, cfg.hidden_size, (EMBED, None), name="dense")(dropout(x)))
        return classifier(cfg, cfg.num_labels, name="out_proj")(dropout(x))


@dataclasses.dataclass(frozen=True)
class HeadInputs:
    """What a head may read: the stack's output and the pieces shared with the body."""

    config: Config
    hidden: jax.Array  # [batch, length, hidden]
    pooled: Optional[jax.Array]  # [batch, hidden] (2 x hidden for mean_max); None when the head is not `pooled`
    tokens: nn.Embed  # the input embedding, for tied output projections
    dropout: nn.Dropout  # the classifier's dropout
    mlm_positions: Optional[jax.Array]  # [batch, predictions]: the MLM head runs only at these positions
    logits_chunk: int = 0  # > 0: the causal LM head returns its VocabProjection (see LMHead), not logits

    def masked(self) -> jax.Array:
        """The hidden states the MLM head scores: all positions, or only `mlm_positions`."""
        if self.mlm_positions is None:
            return self.hidden
        return jnp.take_along_axis(self.hidden, self.mlm_positions[..., None], axis=1)


@dataclasses.dataclass(frozen=True)
class Head:
    """A task's head: the `ModelOutput` fields it fills and how it makes them.

    `pooled`: the head reads the sentence vector, so the model has a pooler (when `config.pooling` is not "none"), as
    the public architectures with this head have one (BertModel, BertForPreTraining, BertForSequenceClassification;
    BertForMaskedLM and the token-level heads have none, and so zoo's parameter counts are theirs).
    `build(HeadInputs) -> {field: array}` creates the head's modules under the model, named as in the checkpoints.
    `classes_from_config`: its outputs are `config.num_labels` classes (named in config.json's id2label).
    """

    outputs: tuple[str, ...]
    build: Callable[[HeadInputs], dict]
    pooled: bool = False
    classes_from_config: bool = False


def _needs_pooled(h: HeadInputs, task: str) -> jax.Array:
    if h.pooled is None:
        raise ValueError(f"task {task!r} needs a pooled output, but this config has pooling='none'")
    return h.pooled


def pretraining_head(h: HeadInputs) -> dict:
    return {"prediction_logits": MaskedLMHead(h.config, h.tokens, name="mlm_head")(h.masked()),
            "seq_relationship_logits": classifier(h.config, 2, name="seq_relationship_head")(
                _needs_pooled(h, "pretraining"))}


def mlm_head(h: HeadInputs) -> dict:
    return {"logits": MaskedLMHead(h.config, h.tokens, name="mlm_head")(h.masked())}


def causal_lm_head(h: HeadInputs) -> dict:
    out = LMHead(h.config, h.tokens, bias=h.config.lm_head_bias, name="lm_head")(h.hidden, chunk=h.logits_chunk)
    return {"vocab_projection" if h.logits_chunk else "logits": out}


def sequence_classification_head(h: HeadInputs) -> dict:
    pooled = _needs_pooled(h, "sequence_classification")
    return {"logits": classifier(h.config, h.config.num_labels, name="classifier")(h.dropout(pooled))}


def token_classification_head(h: HeadInputs) -> dict:
    return {"logits": classifier(h.config, h.config.num_labels, name="classifier")(h.dropout(h.hidden))}


def question_answering_head(h: HeadInputs) -> dict:
    span = classifier(h.config, 2, name="qa_head")(h.hidden)  # [batch, length, 2]: start and end
    return {"start_logits": span[..., 0], "end_logits": span[..., 1]}


HEADS = {
    None: Head((), lambda h: {}, pooled=True),  # the bare model: hidden states (and the pooler's, if it has one)
    "pretraining": Head(("prediction_logits", "seq_relationship_logits"), pretraining_head, pooled=True),
    "mlm": Head(("logits",), mlm_head),
    "causal_lm": Head(("logits",), causal_lm_head),
    "sequence_classification": Head(("logits",), sequence_classification_head, pooled=True,
                                    classes_from_config=True),
    "token_classification": Head(("logits",), token_classification_head, classes_from_config=True),
    "question_answering": Head(("start_logits", "end_logits"), question_answering_head),
}


def has_pooler(cfg: Config, task) -> bool:
    """Whether the model of `task` pools: its head is `pooled`, the config pools, and for the bare model
    `bare_model_pooler` (DistilBertModel has no pooler). Raises KeyError for a task not in HEADS."""
    return HEADS[task].pooled and cfg.pooling != "none" and (task is not None or cfg.bare_model_pooler)


# The heads of a bidirectional encoder (BERT, ALBERT and their kin).
ENCODER_HEADS = ("pretraining", "mlm", "sequence_classification", "token_classification", "question_answering")


ENCODER_ONLY = "encoder"  # the encoder stack of an encoder-decoder alone, in its layout (T5EncoderModel)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderHead:
    """A task's head on an encoder-decoder: which stacks run, and what reads them.

    `decoder`: the model has and runs the decoder; False is the encoder stack alone under the encoder-decoder's
    parameter names, so an encoder-only checkpoint (T5EncoderModel) is the encoder-decoder's without the decoder.
    `build(config, token embedding) -> module`: the head, created under the name `name` (None: no head).
    `per_position`: the head maps each decoder state to `output` (the LM head), so `decode` applies it and generation
    reads it token by token; otherwise the model's `__call__` applies it to the decoder states together with the
    source's ids (BART's classifier reads the states at the source's last EOS).
    `classes_from_config`: its output is `config.num_labels` classes (named in config.json's id2label).
    """

    output: Optional[str] = None
    decoder: bool = True
    build: Optional[Callable[[Config, nn.Embed], nn.Module]] = None
    name: str = ""
    per_position: bool = False
    classes_from_config: bool = False


ENCODER_DECODER_HEADS = {
    None: EncoderDecoderHead(),  # the bare model: the decoder's and the encoder's last hidden states
    "seq2seq": EncoderDecoderHead("logits", build=lambda cfg, tokens: LMHead(cfg, tokens, bias=cfg.lm_head_bias),
                                  name="lm_head", per_position=True),
    "sequence_classification": EncoderDecoderHead("logits", build=lambda cfg, tokens: LastEosClassifier(cfg),
                                                  name="classification_head", classes_from_config=True),
    ENCODER_ONLY: EncoderDecoderHead(decoder=False),
}
