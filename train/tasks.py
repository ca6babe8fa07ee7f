"""What each task trains: one record per task, in one table. The step, the losses, the data, the CLI and the showcase
read `TASKS`; adding a task is one entry here (and a head in `zoo.heads.HEADS` or `ENCODER_DECODER_HEADS` if it
needs a new one).

zoo holds the heads (what a model computes, usable without this package); a task here names its head and adds what
training needs: the batch keys, the loss, the data builder and what to show when training is done.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax.numpy as jnp
import ml_collections

import zoo
from train import inputs, losses, showcase

# Batch keys a single-stack model takes (those of `zoo.Transformer.__call__`); a batch passes the ones it has.
STACK_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "segment_ids")
ENCODER_DECODER_INPUTS = ("input_ids", "decoder_input_ids", "attention_mask", "decoder_attention_mask")


@dataclasses.dataclass(frozen=True)
class Task:
    """A training task.

    Attributes:
      name: `config.task`.
      head: the head the model is created with (`zoo.create(..., task=head)`): a key of the model's head table,
        `zoo.heads.HEADS` (single stack) or `zoo.heads.ENCODER_DECODER_HEADS`.
      inputs: the batch keys the model takes, by name: the step passes those the batch has, and nothing else.
      labels: the batch keys the loss reads besides the inputs.
      loss: (model outputs, the batch's inputs and labels, label smoothing) -> (mean loss, metric sums).
      data: (config, tokenizer) -> `inputs.Datasets`: the training iterator, the eval batches, the tokenizer.
      showcase: (model, params, tokenizer, config) -> None: prints what the trained model does, or None.
      masked_lm: the head scores masked positions, so `loss.mlm_max_predictions` may gather them (`mlm_positions`).
      sentence_pair: the data pairs sentences; `data.sentence_pair_objective` says which objective ("nsp", BERT's
        next sentence, or "sop", ALBERT's sentence order): the recipe's choice, not the family's.
      predictions: model outputs -> {name: per-example array} (jit-traced in the eval step, batch axis first), which
        a benchmark metric (`config.eval.metric`, train.benchmarks) scores on the host; None: the task has none.
      generated_predictions: (model, params, batch) -> {name: per-example array}: predictions the model generates
        from the batch's inputs (a seq2seq model decoding its sources), not read off the teacher-forced outputs;
        jit-traced in the eval step like `predictions`, of which a task has at most one.
      eval_keys: batch keys the metric reads besides `labels`, brought to the host with them.
    """

    name: str
    head: Optional[str]
    inputs: tuple[str, ...]
    labels: tuple[str, ...]
    loss: Callable
    data: Callable[[ml_collections.ConfigDict, object], inputs.Datasets]
    showcase: Optional[Callable] = None
    masked_lm: bool = False
    sentence_pair: bool = False
    predictions: Optional[Callable] = None
    generated_predictions: Optional[Callable] = None
    eval_keys: tuple[str, ...] = ()  # batch keys beyond `labels` the benchmark metric reads (SQuAD's offsets)

    def __post_init__(self):
        if self.predictions is not None and self.generated_predictions is not None:
            raise ValueError(f"task {self.name!r} has both predictions and generated_predictions; the eval step "
                             f"returns one kind of prediction for the benchmark metric")


def argmax_predictions(outputs):
    """The class of each row ([batch]) or token ([batch, length]): the argmax of the head's logits."""
    return {"predictions": jnp.argmax(outputs.logits, axis=-1)}


def class_or_score_predictions(outputs):
    """A classifier's class of each row, or a regression head's (num_labels=1) score of each row ([batch])."""
    if outputs.logits.shape[-1] == 1:
        return {"predictions": outputs.logits[..., 0].astype(jnp.float32)}
    return argmax_predictions(outputs)


def span_logits(outputs):
    """SQuAD's decoding needs every start and end score of a window, not their argmaxes ([batch, length] each)."""
    return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits}


def greedy_translations(model, params, batch):
    """Each source's greedy decoding with the KV cache (`zoo.generate`; EOS, pad and decoder start from the model's
    config): as many new tokens as the labels have columns (the recipe's `data.max_target_length`), the decoder start
    dropped so that `generated_ids[:, t]` is the guess for `labels[:, t]`. [batch, target_length] int32."""
    max_new_tokens = batch["labels"].shape[1]
    out = zoo.generate(model, params, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens)
    return {"generated_ids": out.sequences[:, 1:]}


TASKS = {t.name: t for t in (
    Task("pretraining", head="pretraining", inputs=(*STACK_INPUTS, "mlm_positions"),
         labels=("mlm_labels", "next_sentence_labels"), loss=losses.pretraining_loss, data=inputs.sentence_pair_data,
         showcase=showcase.fill_in_before_and_after, masked_lm=True, sentence_pair=True),
    Task("mlm", head="mlm", inputs=(*STACK_INPUTS, "mlm_positions"), labels=("mlm_labels",),
         loss=losses.masked_lm_loss, data=inputs.sentence_pair_data, showcase=showcase.fill_in_before_and_after,
         masked_lm=True),
    Task("causal_lm", head="causal_lm", inputs=STACK_INPUTS, labels=("labels",), loss=losses.causal_lm_loss,
         data=inputs.causal_lm_data),
    Task("seq2seq", head="seq2seq", inputs=ENCODER_DECODER_INPUTS, labels=("labels",), loss=losses.label_loss,
         data=inputs.seq2seq_data, generated_predictions=greedy_translations),
    Task("sequence_classification", head="sequence_classification", inputs=STACK_INPUTS, labels=("labels",),
         loss=losses.sequence_classification_loss, data=inputs.classification_data,
         predictions=class_or_score_predictions),
    Task("span_corruption", head="seq2seq", inputs=ENCODER_DECODER_INPUTS, labels=("labels",),
         loss=losses.label_loss, data=inputs.span_corruption_data),  # T5's pre-training
    Task("text_infilling", head="seq2seq", inputs=ENCODER_DECODER_INPUTS, labels=("labels",), loss=losses.label_loss,
         data=inputs.text_infilling_data),  # BART's pre-training
    # An encoder-decoder's classifier (BART's): the model derives the decoder inputs, input_ids shifted right
    Task("seq2seq_classification", head="sequence_classification", inputs=("input_ids", "attention_mask"),
         labels=("labels",), loss=losses.sequence_classification_loss, data=inputs.classification_data,
         predictions=class_or_score_predictions),
    Task("token_classification", head="token_classification", inputs=STACK_INPUTS, labels=("labels",),
         loss=losses.label_loss, data=inputs.tagging_data, predictions=argmax_predictions),
    Task("question_answering", head="question_answering", inputs=STACK_INPUTS,
         labels=("start_positions", "end_positions"), loss=losses.span_loss, data=inputs.question_answering_data,
         predictions=span_logits, eval_keys=("example_index", "token_char_start", "token_char_end")),
)}


def get_task(name: str) -> Task:
    """The task record of `config.task`; a ValueError lists the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are: {', '.join(TASKS)}")
    return TASKS[name]


def model_inputs(task: Task, batch: dict) -> dict:
    """The entries of `batch` the task's model takes (labels and the like stay behind)."""
    return {k: batch[k] for k in task.inputs if k in batch}


def loss_inputs(task: Task, batch: dict) -> dict:
    """The entries of `batch` the task's loss reads: its inputs and its labels."""
    return {k: batch[k] for k in (*task.inputs, *task.labels) if k in batch}


def make_datasets(config: ml_collections.ConfigDict, model) -> inputs.Datasets:
    """Batches for `config.task` on `model`, from `config.data`; every error here comes before training starts."""
    task = get_task(config.task)
    if config.data.sentence_pair_objective not in ("nsp", "sop"):
        raise ValueError(f"data.sentence_pair_objective={config.data.sentence_pair_objective!r} is not one of nsp "
                         f"(BERT's next sentence), sop (ALBERT's sentence order)")
    return task.data(config, inputs.load_tokenizer(config, model))
