"""A recipe's `data` section -> the training iterator, the eval batches and the tokenizer."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import ml_collections

from train import data


@dataclasses.dataclass
class Datasets:
    train: Iterator  # resumable: get_state() / set_state()
    eval: Callable[[], Iterator] | None  # a fresh pass over the eval batches
    tokenizer: object


def load_tokenizer(spec: str):
    """'shipped' (the WordPiece vocabulary trained on the shipped corpus) or a checkpoint folder."""
    if spec == "shipped":
        return data.shipped_tokenizer()
    from zoo import tokenizers

    return tokenizers.from_pretrained(spec)


def load_documents(cfg: ml_collections.ConfigDict):
    """Documents (lists of sentences) from the configured source: shipped | text | jsonl | tfds."""
    if cfg.source == "shipped":
        return data.shipped_documents()
    if cfg.source == "text":
        return data.read_text_files(cfg.paths.split(","), on_decode_error=cfg.get("on_decode_error", "raise"))
    if cfg.source == "jsonl":
        return data.read_jsonl(cfg.paths.split(","), text_field=cfg.get("text_field", "text"))
    if cfg.source == "tfds":
        return data.TfdsDocuments(cfg.tfds_name, cfg.split, text_field=cfg.get("text_field", "text"))
    raise ValueError(f"data.source={cfg.source!r} is not one of shipped, text, jsonl, tfds (or dates / tfds "
                     f"records for seq2seq, word_order / tfds records for classification)")


def make_datasets(config: ml_collections.ConfigDict, model) -> Datasets:
    """Batches for `config.task` on `model`, from `config.data`; every error here comes before training starts."""
    cfg, task = config.data, config.task
    spec = cfg.get("tokenizer", "shipped") or config.get("init_from", "")
    if not spec:
        raise ValueError("config.data.tokenizer is empty: name a checkpoint folder with the tokenizer's files "
                         "(or 'shipped' for the shipped WordPiece vocabulary)")
    tokenizer = load_tokenizer(spec)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}")
    batch_size, seed = config.train.batch_size, config.seed
    eval_batches = cfg.get("eval_batches", 0)

    if task in ("pretraining", "mlm", "causal_lm"):
        documents = load_documents(cfg)
        held_out = int(len(documents) * cfg.get("eval_fraction", 0.0)) if eval_batches else 0
        train_docs, eval_docs = documents[:len(documents) - held_out], documents[len(documents) - held_out:]

        def batches(docs, **options):
            if task == "causal_lm":
                return data.causal_lm_batches(docs, tokenizer, batch_size=batch_size, max_length=cfg.max_length,
                                              seed=seed, **options)
            objective = "sop" if model.config.family == "albert" else "nsp"
            return data.bert_pretraining_batches(
                docs, tokenizer, batch_size=batch_size, max_length=cfg.max_length, seed=seed, objective=objective,
                whole_word_masking=cfg.get("whole_word_masking", False), mask_rate=cfg.get("mask_rate", 0.15),
                max_predictions=cfg.get("max_predictions", 0) or None, **options)

        train = batches(train_docs)
        evaluate = (lambda: _take(batches(eval_docs, num_epochs=1, shuffle=False), eval_batches)) if held_out else None
        return Datasets(train, evaluate, tokenizer)

    if task == "seq2seq":
        if cfg.source == "dates":
            pairs = data.date_translation_pairs(cfg.get("num_examples", 20000), seed=seed)
            eval_pairs = data.date_translation_pairs(cfg.get("num_eval_examples", 512), seed=seed + 1)
        elif cfg.source == "tfds":
            pairs = data.TfdsPairs(cfg.tfds_name, cfg.split, source_field=cfg.source_field,
                                   target_field=cfg.target_field)
            eval_pairs = data.TfdsPairs(cfg.tfds_name, cfg.eval_split, source_field=cfg.source_field,
                                        target_field=cfg.target_field) if cfg.get("eval_split") else None
        else:
            raise ValueError(f"seq2seq data.source={cfg.source!r} is not one of dates, tfds")

        def pair_batches(p, **options):
            return data.seq2seq_batches(p, tokenizer, batch_size=batch_size, max_source_length=cfg.max_length,
                                        max_target_length=cfg.get("max_target_length", cfg.max_length), seed=seed,
                                        **options)

        evaluate = (lambda: _take(pair_batches(eval_pairs, num_epochs=1, shuffle=False), eval_batches)) \
            if eval_pairs is not None and eval_batches else None
        return Datasets(pair_batches(pairs), evaluate, tokenizer)

    if task == "sequence_classification":
        if cfg.source == "word_order":  # the shipped task: offline, two labels (1 = the words in their order)
            records = data.word_order_records("train", seed=seed)
            eval_records = data.word_order_records("validation", seed=seed)
        elif cfg.source == "tfds":
            fields = tuple(cfg.fields)
            records = data.TfdsRecords(cfg.tfds_name, cfg.split, fields=fields)
            eval_records = data.TfdsRecords(cfg.tfds_name, cfg.eval_split, fields=fields) \
                if cfg.get("eval_split") else None
        else:
            raise ValueError(f"sequence_classification data.source={cfg.source!r} is not one of tfds (e.g. "
                             f"glue/sst2), word_order (the shipped task)")

        def record_batches(r, **options):
            return data.classification_batches(r, tokenizer, batch_size=batch_size, max_length=cfg.max_length,
                                               seed=seed, **options)

        evaluate = (lambda: _take(record_batches(eval_records, num_epochs=1, shuffle=False), eval_batches)) \
            if eval_records is not None and eval_batches else None
        return Datasets(record_batches(records), evaluate, tokenizer)

    if task == "question_answering":
        def squad(split):
            return SquadRecords(data.TfdsRecords(cfg.tfds_name, split, fields=("question", "context", "answers")))

        if cfg.source != "tfds":
            raise ValueError(f"question_answering data.source={cfg.source!r}: use tfds (e.g. squad/v1.1)")

        def qa_batches(records, **options):
            return data.question_answering_batches(records, tokenizer, batch_size=batch_size,
                                                   max_length=cfg.max_length, seed=seed, **options)

        evaluate = (lambda: _take(qa_batches(squad(cfg.eval_split), num_epochs=1, shuffle=False), eval_batches)) \
            if cfg.get("eval_split") and eval_batches else None
        return Datasets(qa_batches(squad(cfg.split)), evaluate, tokenizer)

    raise ValueError(f"no data recipe for task {task!r}")


class SquadRecords:
    """tfds squad records -> (question, context, answer_start, answer_text) with the first reference answer."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        question, context, answers = self.records[index]
        text = answers["text"][0]
        return question, context, int(answers["answer_start"][0]), text.decode() if isinstance(text, bytes) else text


def _take(iterator, count: int):
    for i, batch in enumerate(iterator):
        if i >= count:
            return
        yield batch
