"""The defaults every recipe in configs/ starts from (a recipe file says only what it changes), and loading a recipe
by name."""

import importlib.util
import pathlib

import ml_collections

# configs/ sits next to train/ in the repository (an editable install or a checkout on sys.path), not in a wheel
RECIPES_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def apply_process_settings(config: ml_collections.ConfigDict) -> None:
    """Makes the process-wide settings a recipe asks for, as `python -m train` does: glibc's malloc keeping freed memory
    (`train.retain_freed_memory`, train/malloc.py) and the CPU split into `train.cpu_devices` JAX devices. Call it
    before JAX starts its threads or makes its CPU client (before the first computation or device query)."""
    import jax

    from train.malloc import retain_freed_memory

    if config.train.retain_freed_memory:
        retain_freed_memory()
    if config.train.cpu_devices:
        jax.config.update("jax_num_cpu_devices", config.train.cpu_devices)


def base_config() -> ml_collections.ConfigDict:
    """Every key a recipe may set, with its default ("" or 0 where there is none, so that the command line can set
    it): the code reads `config.x` directly, and a key that is not here is an error at the command line, not a
    silently ignored override."""
    c = ml_collections.ConfigDict()
    c.model = "bert-tiny"  # a preset of zoo.list_models()
    c.task = "pretraining"  # a task of train.tasks.TASKS
    c.model_overrides = ml_collections.ConfigDict()  # any zoo.Config field
    c.init_from = ""  # a folder with config.json + model.safetensors to start from (fine-tuning)
    # a zoo run's workdir to start from: the params its last checkpoint shares with this model (the body of a
    # pre-training run of the same model config); this task's head starts fresh (train.loop.params_from_run)
    c.init_from_run = ""
    c.seed = 0

    c.train = ml_collections.ConfigDict(dict(steps=1000, batch_size=32, log_every=50,
                                             eval_every=0,  # 0: no eval during training
                                             # python -m train sets glibc's malloc to keep freed memory
                                             # (train/malloc.py): on CPU the demo BERT's steps ran 1.4x faster,
                                             # BERT-base's at 8 x 128 no faster
                                             retain_freed_memory=False,
                                             # > 0: python -m train splits the CPU into this many JAX devices
                                             # (jax_num_cpu_devices), and the mesh's data axis spans them; 0: JAX's
                                             # own count (one, or XLA_FLAGS'); accelerators are untouched
                                             cpu_devices=0))
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-4, b1=0.9, b2=0.999, eps=1e-6,
                                                 weight_decay=0.01, clip_norm=1.0, grad_accum_steps=1,
                                                 # with LoRA adapters (model_overrides.lora_rank) only they train,
                                                 # and what this adds: "head", "biases" or "head,biases"
                                                 lora_also_train="",
                                                 # "name=multiplier,...": parameters under those names train at
                                                 # that many times the learning rate (train.optimizer.scale_by_name)
                                                 lr_multipliers=""))
    c.schedule = ml_collections.ConfigDict(dict(name="linear", warmup_steps=100, end_value=0.0))
    # mlm_max_predictions > 0: the MLM head runs at that many masked positions per row, not all (BERT's recipe);
    # set data.max_predictions to the same number so no masked token is dropped.
    # logits_chunk > 0: a causal LM / seq2seq loss makes the logits (and their gradient) that many positions of every
    # row at a time, so [tokens, vocab] float32 logits are never held at once (a large vocabulary's memory)
    c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.0, mlm_max_predictions=0, logits_chunk=0))
    # a benchmark metric of train.benchmarks (e.g. "glue/cola", "squad", or "translation": BLEU, chrF and exact
    # match of a seq2seq task's greedy translations), reported beside eval_loss as eval_<name>s
    c.eval = ml_collections.ConfigDict(dict(metric=""))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3,
                                                  best_metric="",  # e.g. "eval_accuracy": also keep the best
                                                  best_mode="min"))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.data = ml_collections.ConfigDict(dict(
        # where examples come from: shipped | text | jsonl | tfds (documents); dates | tfds (seq2seq pairs);
        # word_order | tfds (classification records); code_spans | tfds (tagging records); tfds (question
        # answering)
        source="shipped",
        # "shipped" / "shipped-4096" (the corpus's WordPiece vocabularies) or a folder; "" = init_from's
        tokenizer="shipped",
        extra_ids=0,  # T5's sentinels <extra_id_0..N-1> appended to the shipped vocabulary (span corruption)
        max_length=128,  # tokens per row (the source's, for seq2seq)
        max_target_length=0,  # seq2seq targets; 0 = max_length
        paths="",  # text / jsonl: comma-separated files
        text_field="text",  # jsonl / tfds documents: the field holding the text
        on_decode_error="raise",  # text files that are not UTF-8: raise | skip (with a warning)
        tfds_name="", split="train",
        eval_split="",  # tfds: the held-out split ("" = no eval data)
        eval_fraction=0.05,  # documents: the fraction held out for eval
        eval_split_seed=-1,  # documents: -1 holds out the last eval_fraction, a seed >= 0 a random draw of them
        eval_batches=0,  # eval batches per evaluation; 0 = no eval data
        source_field="", target_field="",  # tfds translation pairs: the two languages' fields
        fields=(),  # tfds records: e.g. ("sentence", "label") to classify, ("tokens", "ner") to tag
        num_examples=20000, num_eval_examples=512,  # the generated date-translation task
        sentence_pair_objective="nsp",  # sentence-pair pre-training: nsp (BERT) | sop (ALBERT)
        shuffle_window=1,  # sentence-pair training rows permuted in windows of this many (grain's); 1 = none
        workers=0,  # processes building the training batches (grain's mp_prefetch); 0 = in the training process
        device_prefetch=2,  # training batches sent to the devices ahead of the step that takes them
        whole_word_masking=False, mask_rate=0.15,
        max_predictions=0,  # masked tokens per row at most (0 = no cap)
        doc_stride=128,  # question answering: tokens consecutive windows of a long context share
    ))
    return c


def load_recipe(name: str) -> ml_collections.ConfigDict:
    """The `get_config()` of a recipe: a name in the repository's configs/ ("bert_tiny") or a path to a recipe file.

    Raises FileNotFoundError naming the recipes there when there is no such file (e.g. zoo was installed from a wheel,
    which has no configs/: install the repository with `pip install -e`). Raises ValueError naming the file when it
    has a syntax error, raises on import or in `get_config()`, has no `get_config`, or that returns no ConfigDict.
    """
    path = pathlib.Path(name) if name.endswith(".py") else RECIPES_DIR / f"{name}.py"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.py")) if RECIPES_DIR.is_dir() else []
        raise FileNotFoundError(f"no recipe {path}; the recipes in {RECIPES_DIR}: {', '.join(known) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"{path}:{e.lineno}: the recipe has a syntax error ({e.msg})") from None
    except Exception as e:  # the recipe's own code: keep its traceback as the cause
        raise ValueError(f"{path}: importing the recipe raised {type(e).__name__}: {e}") from e
    get_config = vars(module).get("get_config")
    if not callable(get_config):
        raise ValueError(f"{path}: a recipe defines get_config(), and this file does not")
    try:
        config = get_config()
    except Exception as e:
        raise ValueError(f"{path}: get_config() raised {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config() returned a {type(config).__name__}, not an ml_collections.ConfigDict")
    return config
