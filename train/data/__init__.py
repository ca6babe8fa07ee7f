"""Text to batches for every zoo family: sources, the papers' pre-training recipes, and a resumable loader.

- `train.data.sources`: documents from the shipped corpus, text files, JSONL, tensorflow-datasets.
- `train.data.pretraining`: `mask_tokens`, `make_sentence_pairs` (NSP/SOP), `pack_tokens` and `pack_documents`
  (grain's packing), `make_seq2seq_example`.
- `train.data.loader`: `Batches` (a grain pipeline; get_state/set_state) and `bert_pretraining_batches`,
  `albert_pretraining_batches`, `causal_lm_batches`, `seq2seq_batches`, `text_infilling_batches` (BART), `span_corruption_batches` (T5),
  `classification_batches`, `tagging_batches` and `question_answering_batches` (fine-tuning).
- `train.data.corpus`: the corpus, WordPiece vocabulary, date-translation, word-order, code-spans and far-key tasks
  shipped with zoo.
"""

from train.data.corpus import (CODE_SPANS_LABELS, code_spans_records, date_translation_pairs, far_key_records,
                               shipped_documents, shipped_tokenizer, word_order_records)
from train.data.loader import (Batches, CausalLMRecipe, ClassificationRecipe, Recipe, Seq2SeqRecipe,
                               SentencePairRecipe, SpanCorruptionRecipe, SpanQARecipe, TaggingRecipe,
                               TextInfillingRecipe, TokenizedDocuments, albert_pretraining_batches, bert_pretraining_batches,
                               causal_lm_batches, classification_batches, question_answering_batches, seq2seq_batches,
                               span_corruption_batches, tagging_batches, text_infilling_batches)
from train.data.pretraining import (IGNORE_INDEX, make_sentence_pairs, make_seq2seq_example, mask_tokens,
                                    maskable_positions, pack_documents, pack_tokens, random_spans_noise_mask,
                                    span_corruption, text_infilling)
from train.data.sources import (TfdsDocuments, TfdsPairs, TfdsRecords, parse_documents, read_jsonl, read_text_files,
                                split_sentences, tfds_tag_names)

__all__ = ["Batches", "CausalLMRecipe", "ClassificationRecipe", "Recipe", "IGNORE_INDEX", "Seq2SeqRecipe",
           "SentencePairRecipe", "SpanCorruptionRecipe", "CODE_SPANS_LABELS", "TaggingRecipe", "TextInfillingRecipe",
           "TfdsDocuments", "TfdsPairs", "TfdsRecords", "TokenizedDocuments",
           "albert_pretraining_batches", "bert_pretraining_batches", "causal_lm_batches", "classification_batches",
           "code_spans_records",
           "date_translation_pairs", "far_key_records", "make_sentence_pairs", "make_seq2seq_example", "mask_tokens",
           "maskable_positions", "pack_documents", "pack_tokens", "parse_documents", "question_answering_batches",
           "random_spans_noise_mask", "read_jsonl", "read_text_files", "seq2seq_batches", "SpanQARecipe",
           "shipped_documents", "shipped_tokenizer", "span_corruption", "span_corruption_batches",
           "split_sentences", "tagging_batches", "text_infilling", "text_infilling_batches",
           "tfds_tag_names", "word_order_records"]
