import pytest

import zoo

# Published parameter counts (encoder with pooler for BERT/ALBERT/RoBERTa; GPT-2 with its tied LM head counted once).
# RoBERTa's, XLM-RoBERTa's and DistilBERT's are transformers' num_parameters() of RobertaModel, XLMRobertaModel and
# DistilBertModel (no pooler) built on the meta device from the public configs.
PUBLISHED = {
    "bert-base-uncased": 109_482_240,
    "bert-large-uncased": 335_141_888,
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "albert-base-v2": 11_683_584,
    "albert-large-v2": 17_683_968,
    "roberta-base": 124_645_632,
    "roberta-large": 355_359_744,
    "xlm-roberta-base": 278_043_648,
    "distilbert-base-uncased": 66_362_880,
    "bart-base": 139_420_416,  # BartModel on the meta device, from BartConfig with bart-base's sizes
    "bart-large": 406_291_456,  # BartModel from the default BartConfig (bart-large's)
    # T5: transformers' T5Model built from the public configs on the meta device
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
    "flan-t5-small": 60_511_616,
    "flan-t5-base": 222_903_552,
}
# T5ForConditionalGeneration (v1.1 / Flan-T5 adds its untied lm_head) and T5EncoderModel
T5_TASKS = {("t5-small", "seq2seq"): 60_506_624, ("flan-t5-small", "seq2seq"): 76_961_152,
            ("flan-t5-base", "seq2seq"): 247_577_856, ("t5-small", "encoder"): 35_330_816,
            ("t5-base", "encoder"): 109_628_544, ("flan-t5-small", "encoder"): 35_332_800}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_public_preset_parameter_count_equals_published(name):
    assert zoo.param_count(zoo.create(name)) == PUBLISHED[name]


@pytest.mark.parametrize("name, task", sorted(T5_TASKS))
def test_t5_task_parameter_counts_equal_transformers(name, task):
    assert zoo.param_count(zoo.create(name, task=task)) == T5_TASKS[name, task]


# transformers' counts of the task architectures (num_parameters(), the tied decoder counted once): only the bare
# model, pre-training and sequence classification have a pooler.
PUBLISHED_WITH_HEAD = {
    ("bert-base-uncased", "mlm"): 109_514_298,  # BertForMaskedLM
    ("bert-base-uncased", "pretraining"): 110_106_428,  # BertForPreTraining
    ("bert-base-uncased", "token_classification"): 108_893_186,  # BertForTokenClassification, 2 labels
    ("bert-base-uncased", "question_answering"): 108_893_186,  # BertForQuestionAnswering
    ("albert-base-v2", "mlm"): 11_221_680,  # AlbertForMaskedLM
    ("roberta-base", "mlm"): 124_697_433,  # RobertaForMaskedLM
    ("roberta-base", "sequence_classification"): 124_647_170,  # RobertaForSequenceClassification: classifier.dense
    ("roberta-base", "token_classification"): 124_056_578,  # RobertaForTokenClassification
    ("xlm-roberta-base", "mlm"): 278_295_186,  # XLMRobertaForMaskedLM
    ("distilbert-base-uncased", "mlm"): 66_985_530,  # DistilBertForMaskedLM
    ("distilbert-base-uncased", "sequence_classification"): 66_955_010,  # pre_classifier + classifier
    ("distilbert-base-uncased", "question_answering"): 66_364_418,  # DistilBertForQuestionAnswering
    # BartForConditionalGeneration's 139_420_416 plus final_logits_bias (50_265), a buffer in transformers, a zoo param
    ("bart-base", "seq2seq"): 139_470_681,
    ("bart-base", "sequence_classification"): 140_012_546,  # BartForSequenceClassification, 2 labels
    ("bart-large", "seq2seq"): 406_341_721,
    ("bart-large", "sequence_classification"): 407_343_106,
}


@pytest.mark.parametrize("name,task", sorted(PUBLISHED_WITH_HEAD))
def test_task_architecture_parameter_count_equals_transformers(name, task):
    assert zoo.param_count(zoo.create(name, task=task)) == PUBLISHED_WITH_HEAD[name, task]


def test_transformer_base_parameter_count_follows_from_its_shape():
    cfg = zoo.get_config("transformer-base")
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    attention, ffn, norm = 4 * (d * d + d), 2 * d * f + f + d, 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    expected = v * d + cfg.num_layers * encoder_layer + cfg.num_decoder_layers * decoder_layer
    assert zoo.param_count(zoo.create("transformer-base")) == expected


def test_every_issue_preset_is_listed():
    names = zoo.list_models()
    for name in ["bert-base-uncased", "bert-large-uncased", "gpt2", "gpt2-medium", "albert-base-v2",
                 "albert-large-v2", "transformer-base", "transformer-big", "roberta-base", "roberta-large",
                 "xlm-roberta-base", "distilbert-base-uncased", "bart-base", "bart-large"]:
        assert name in names


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'bert-huge'.*bert-base-uncased.*gpt2"):
        zoo.create("bert-huge")


def test_unsupported_task_names_the_family_and_its_tasks():
    with pytest.raises(ValueError, match="task 'question_answering' is not supported by the gpt family.*causal_lm"):
        zoo.create("gpt-tiny", task="question_answering")
    with pytest.raises(ValueError, match="task 'causal_lm' is not supported by the bert family"):
        zoo.create("bert-tiny", task="causal_lm")


def test_overrides_reach_the_config_and_unknown_ones_fail():
    model = zoo.create("bert-tiny", task="sequence_classification", num_labels=5, dtype="bfloat16")
    assert model.config.num_labels == 5 and model.config.dtype.name == "bfloat16"
    assert model.task == "sequence_classification"
    with pytest.raises(ValueError, match="unknown config field"):
        zoo.create("bert-tiny", num_label=5)


def test_create_accepts_a_config():
    cfg = zoo.get_config("gpt-tiny", num_layers=3)
    assert zoo.create(cfg, task="causal_lm").config.num_layers == 3
