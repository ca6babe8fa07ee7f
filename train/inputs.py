"""A recipe's `data` section -> the training iterator, the eval batches and the tokenizer: one data builder per kind
of task, named by the task records (train/tasks.py)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import ml_collections
import numpy as np

from train import data


@dataclasses.dataclass
class Datasets:
    train: Iterator  # resumable: get_state() / set_state()
    eval: Callable[[], Iterator] | None  # a fresh pass over the eval batches
    tokenizer: object


def tokenizer_from_spec(spec: str, extra_ids: int = 0):
    """'shipped' or 'shipped-4096' (the WordPiece vocabularies of 1024 and 4096 tokens trained on the shipped
    corpus, with `extra_ids` T5 sentinels appended) or a checkpoint folder (whose tokenizer brings its own sentinels,
    if any)."""
    if spec in data.corpus.SHIPPED_VOCABULARIES:
        return data.shipped_tokenizer(extra_ids, spec)
    if extra_ids:
        raise ValueError(f"data.extra_ids={extra_ids} appends sentinels to the shipped vocabulary; the tokenizer of "
                         f"{spec} is used as it is (a T5 tokenizer has its <extra_id_N>): set data.extra_ids=0")
    from zoo import tokenizers

    return tokenizers.from_pretrained(spec)


def load_documents(cfg: ml_collections.ConfigDict):
    """Documents (lists of sentences) from the configured source: shipped | text | jsonl | tfds."""
    if cfg.source == "shipped":
        return data.shipped_documents()
    if cfg.source == "text":
        return data.read_text_files(cfg.paths.split(","), on_decode_error=cfg.on_decode_error)
    if cfg.source == "jsonl":
        return data.read_jsonl(cfg.paths.split(","), text_field=cfg.text_field)
    if cfg.source == "tfds":
        return data.TfdsDocuments(cfg.tfds_name, cfg.split, text_field=cfg.text_field)
    raise ValueError(f"data.source={cfg.source!r} is not one of shipped, text, jsonl, tfds (or dates / tfds "
                     f"records for seq2seq, word_order / far_key / tfds records for classification, code_spans / tfds "
                     f"records for tagging)")


def recipe_tokenizer(config: ml_collections.ConfigDict):
    """The tokenizer of `config.data.tokenizer`, or of the `init_from` checkpoint when that is empty."""
    spec = config.data.tokenizer or config.init_from
    if not spec:
        raise ValueError("config.data.tokenizer is empty: name a checkpoint folder with the tokenizer's files "
                         "(or 'shipped' / 'shipped-4096' for a shipped WordPiece vocabulary)")
    return tokenizer_from_spec(spec, config.data.extra_ids)


def load_tokenizer(config: ml_collections.ConfigDict, model):
    """The recipe's tokenizer (`recipe_tokenizer`), checked to fit the model's vocabulary."""
    tokenizer = recipe_tokenizer(config)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}")
    return tokenizer


# The held-out batches' random draws (masks, next-sentence negatives, noise spans) take this seed whatever `config.seed`:
# runs of different seeds are scored on the same rows, so their eval metrics differ by what the runs learned.
EVAL_BATCH_SEED = 0


def _datasets(config: ml_collections.ConfigDict, make_batches, train_examples, eval_examples, tokenizer,
              **train_options) -> Datasets:
    """The training iterator, built in `data.workers` processes (grain's mp_prefetch; 0: in this one), and the eval
    batches, built here: a few batches each eval, where starting workers would cost more than it saves.
    `make_batches(examples, seed=..., **options)` makes either."""
    return Datasets(make_batches(train_examples, seed=config.seed, workers=config.data.workers, **train_options),
                    _eval(config, make_batches, eval_examples), tokenizer)


def _eval(config: ml_collections.ConfigDict, make_batches, examples) -> Callable[[], Iterator] | None:
    """A fresh single pass over the first `data.eval_batches` eval batches, or None without eval data. The last batch
    of the pass may be smaller (every example is scored): train.loop.evaluate pads it."""
    if examples is None or not config.data.eval_batches:
        return None
    return lambda: _take(make_batches(examples, seed=EVAL_BATCH_SEED, num_epochs=1, shuffle=False,
                                      keep_remainder=True), config.data.eval_batches)


def _held_out_split(config: ml_collections.ConfigDict, documents):
    """(train documents, eval documents or None): `data.eval_fraction` of them held out, the last ones with
    `data.eval_split_seed` -1, else a random draw seeded by it (`held_out_documents`), both in the corpus's order.
    A random draw samples a corpus kept in some order (the shipped one ends with Python's language-reference topics)
    evenly: its held-out documents, and the next-sentence negatives drawn among them, are like the training ones."""
    held_out = int(len(documents) * config.data.eval_fraction) if config.data.eval_batches else 0
    if not held_out:
        return documents, None
    if config.data.eval_split_seed < 0:
        return documents[:len(documents) - held_out], documents[len(documents) - held_out:]
    is_held_out = held_out_documents(len(documents), held_out, config.data.eval_split_seed)
    return (DocumentSubset(documents, np.flatnonzero(~is_held_out)),
            DocumentSubset(documents, np.flatnonzero(is_held_out)))


def held_out_documents(num_documents: int, held_out: int, seed: int) -> np.ndarray:
    """[num_documents] bool, True at `held_out` documents drawn at random (without replacement) with `seed`."""
    if not 0 <= held_out <= num_documents:
        raise ValueError(f"cannot hold out {held_out} of {num_documents} documents")
    is_held_out = np.zeros(num_documents, bool)
    is_held_out[np.random.default_rng(seed).choice(num_documents, held_out, replace=False)] = True
    return is_held_out


class DocumentSubset:
    """The documents at `indices` of a random-access source, in that order, read when indexed."""

    def __init__(self, documents, indices):
        self.documents, self.indices = documents, np.asarray(indices, np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.documents[int(self.indices[index])]


def sentence_pair_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """BERT's MLM + next-sentence (or ALBERT's sentence-order: `data.sentence_pair_objective`) rows of documents."""
    cfg = config.data
    train_docs, eval_docs = _held_out_split(config, load_documents(cfg))

    def batches(docs, **options):
        return data.bert_pretraining_batches(
            docs, tokenizer, batch_size=config.train.batch_size, max_length=cfg.max_length,
            objective=cfg.sentence_pair_objective, whole_word_masking=cfg.whole_word_masking,
            mask_rate=cfg.mask_rate, max_predictions=cfg.max_predictions or None, **options)

    # only the training rows are shuffled across documents
    return _datasets(config, batches, train_docs, eval_docs, tokenizer, shuffle_window=cfg.shuffle_window)


def causal_lm_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """GPT's packed next-token rows of documents."""
    return _document_data(config, tokenizer, data.causal_lm_batches)


def text_infilling_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """BART's denoising rows of documents: the source infilled, the original the target."""
    return _document_data(config, tokenizer, data.text_infilling_batches)


def span_corruption_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """T5's span-corrupted rows of documents: `data.max_length` source and `data.max_target_length` target tokens."""
    cfg = config.data

    def batches(docs, tokenizer, **options):
        return data.span_corruption_batches(docs, tokenizer, max_target_length=cfg.max_target_length or None,
                                            **options)

    return _document_data(config, tokenizer, batches)


def _document_data(config: ml_collections.ConfigDict, tokenizer, make_batches) -> Datasets:
    """Rows of `data.max_length` tokens that `make_batches(documents, tokenizer, ...)` makes of the documents."""
    train_docs, eval_docs = _held_out_split(config, load_documents(config.data))

    def batches(docs, **options):
        return make_batches(docs, tokenizer, batch_size=config.train.batch_size, max_length=config.data.max_length,
                            **options)

    return _datasets(config, batches, train_docs, eval_docs, tokenizer)


def seq2seq_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """Source/target pairs: the shipped date translation (`source="dates"`) or a tfds translation set."""
    cfg = config.data
    if cfg.source == "dates":
        pairs = data.date_translation_pairs(cfg.num_examples, seed=config.seed)
        eval_pairs = data.date_translation_pairs(cfg.num_eval_examples, seed=config.seed + 1)
    elif cfg.source == "tfds":
        pairs = data.TfdsPairs(cfg.tfds_name, cfg.split, source_field=cfg.source_field, target_field=cfg.target_field)
        eval_pairs = data.TfdsPairs(cfg.tfds_name, cfg.eval_split, source_field=cfg.source_field,
                                    target_field=cfg.target_field) if cfg.eval_split else None
    else:
        raise ValueError(f"seq2seq data.source={cfg.source!r} is not one of dates, tfds")

    def batches(p, **options):
        return data.seq2seq_batches(p, tokenizer, batch_size=config.train.batch_size,
                                    max_source_length=cfg.max_length,
                                    max_target_length=cfg.max_target_length or cfg.max_length, **options)

    return _datasets(config, batches, pairs, eval_pairs, tokenizer)


def classification_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """Labelled sentences (or pairs): the shipped word-order task (`source="word_order"`), the generated far-key task
    (`source="far_key"`: `data.num_examples` rows of data.max_length - 2 words for training, `num_eval_examples` of
    another seed for eval) or a tfds set."""
    cfg = config.data
    if cfg.source == "word_order":  # the shipped task: offline, two labels (1 = the words in their order)
        records = data.word_order_records("train", seed=config.seed)
        eval_records = data.word_order_records("validation", seed=config.seed)
    elif cfg.source == "far_key":  # generated long rows: [CLS], the words, [SEP] fill data.max_length
        records = data.far_key_records(cfg.num_examples, seed=config.seed, num_words=cfg.max_length - 2)
        eval_records = data.far_key_records(cfg.num_eval_examples, seed=config.seed + 1,
                                            num_words=cfg.max_length - 2)
    elif cfg.source == "tfds":
        records, eval_records = _tfds_records(cfg, tuple(cfg.fields))
    else:
        raise ValueError(f"sequence_classification data.source={cfg.source!r} is not one of tfds (e.g. "
                         f"glue/sst2), word_order or far_key (the shipped tasks)")
    return _record_data(config, tokenizer, data.classification_batches, records, eval_records)


def tagging_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """(words, tags) records for token classification: the shipped code-spans task (`source="code_spans"`) or
    a tfds set whose `data.fields` name its words and its per-word tags (conll2003: ("tokens", "ner")). The tag
    names are `tagging_label_names(config.data)`; `model_overrides.num_labels` must count them (a ValueError says so),
    as the loss takes a tag id past the head's classes without an error."""
    cfg = config.data
    label_names = tagging_label_names(cfg)
    if config.model_overrides.get("num_labels") != len(label_names):
        raise ValueError(f"data.source={cfg.source!r} has {len(label_names)} tags ({', '.join(label_names)}) but "
                         f"model_overrides.num_labels={config.model_overrides.get('num_labels')}: set it to "
                         f"{len(label_names)}")
    named = tuple(config.model_overrides.get("label_names", ()))  # written as the exported config.json's id2label
    if named and named != label_names:
        raise ValueError(f"model_overrides.label_names={named} are not the tags of data.source={cfg.source!r}: "
                         f"{label_names}")
    if cfg.source == "code_spans":  # the shipped task: offline
        records = data.code_spans_records("train")
        eval_records = data.code_spans_records("validation")
    else:
        records, eval_records = _tfds_records(cfg, tagging_fields(cfg))
    return _record_data(config, tokenizer, data.tagging_batches, records, eval_records)


def tagging_fields(cfg: ml_collections.ConfigDict) -> tuple[str, str]:
    """(words field, tags field) of a tfds tagging set, from `data.fields`."""
    if len(cfg.fields) != 2:
        raise ValueError(f"token_classification data.fields={tuple(cfg.fields)} must name two tfds features, the "
                         f"words and their tags: e.g. ('tokens', 'ner') for conll2003")
    return tuple(cfg.fields)


def tagging_label_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The tag names of a tagging source's records, by tag id, as the data declares them: the shipped task's
    `CODE_SPANS_LABELS`, or the class names of the tfds tags feature (`data.fields[1]`). The "tagging" metric
    (train.benchmarks) reads entities off them."""
    if cfg.source == "code_spans":
        return data.CODE_SPANS_LABELS
    if cfg.source == "tfds":
        return data.tfds_tag_names(cfg.tfds_name, tagging_fields(cfg)[1])
    raise ValueError(f"token_classification data.source={cfg.source!r} is not one of tfds (e.g. conll2003), "
                     f"code_spans (the shipped task)")


def _tfds_records(cfg: ml_collections.ConfigDict, fields: tuple[str, ...]):
    """(training records, eval records or None without `data.eval_split`) of the tfds set `data.tfds_name`."""
    records = data.TfdsRecords(cfg.tfds_name, cfg.split, fields=fields)
    eval_records = data.TfdsRecords(cfg.tfds_name, cfg.eval_split, fields=fields) if cfg.eval_split else None
    return records, eval_records


def _record_data(config: ml_collections.ConfigDict, tokenizer, make_batches, records, eval_records) -> Datasets:
    """Rows of `data.max_length` tokens that `make_batches(records, tokenizer, ...)` makes of labelled records."""

    def batches(r, **options):
        return make_batches(r, tokenizer, batch_size=config.train.batch_size, max_length=config.data.max_length,
                            **options)

    return _datasets(config, batches, records, eval_records, tokenizer)


def question_answering_data(config: ml_collections.ConfigDict, tokenizer) -> Datasets:
    """SQuAD-style span records from tfds (e.g. squad/v1.1), trained on the first reference answer of each; a context
    longer than a row is cut into windows sharing `data.doc_stride` tokens (128 in run_qa at 384 tokens).

    The eval rows' `example_index` indexes `squad_records(config.data, config.data.eval_split)`, whose `contexts` and
    `references` `train.squad.squad_metric_from_config` scores against."""
    cfg = config.data

    def batches(records, **options):
        return data.question_answering_batches(records, tokenizer, batch_size=config.train.batch_size,
                                               max_length=cfg.max_length, doc_stride=cfg.doc_stride, **options)

    eval_records = squad_records(cfg, cfg.eval_split) if cfg.eval_split else None
    return _datasets(config, batches, squad_records(cfg, cfg.split), eval_records, tokenizer)


def squad_records(cfg: ml_collections.ConfigDict, split: str) -> "SquadRecords":
    """The `split` of the tfds SQuAD set `cfg.tfds_name` (e.g. squad/v1.1), as `SquadRecords`."""
    if cfg.source != "tfds":
        raise ValueError(f"question_answering data.source={cfg.source!r}: use tfds (e.g. squad/v1.1)")
    return SquadRecords(data.TfdsRecords(cfg.tfds_name, split, fields=("question", "context", "answers")))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SquadRecords:
    """tfds squad records -> (question, context, answer_start, answer_text) with the first reference answer; all the
    reference answers are in `references` (`references[i]` -> [str]), the contexts in `contexts`, for the eval."""

    def __init__(self, records):
        self.records = records
        self.contexts = _Column(records, lambda record: _text(record[1]))
        self.references = _Column(records, lambda record: [_text(text) for text in record[2]["text"]])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        question, context, answers = self.records[index]
        return (_text(question), _text(context), int(answers["answer_start"][0]), _text(answers["text"][0]))


class _Column:
    """One field of each record, read when indexed: `column[i] = field(records[i])`."""

    def __init__(self, records, field: Callable):
        self.records, self.field = records, field

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.field(self.records[index])


def _take(iterator, count: int):
    for i, batch in enumerate(iterator):
        if i >= count:
            return
        yield batch
