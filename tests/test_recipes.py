"""Each tiny recipe learns, the entry point leaves its files and resumes, and two hosts train as one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict

from tests.train_helpers import REPO, run_two_hosts, xla_flags
from train.recipes import RECIPES_DIR, base_config, load_recipe

ENV = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags(1)}


def test_load_recipe_finds_configs_by_name_and_by_path():
    by_name = load_recipe("transformer_tiny")
    assert by_name == load_recipe(os.path.join(REPO, "configs", "transformer_tiny.py"))
    assert (by_name.model, by_name.task, by_name.train.steps) == ("transformer-tiny", "seq2seq", 1200)
    with pytest.raises(FileNotFoundError, match=r"no recipe .*bert_huge.py; the recipes in .*configs: .*bert_tiny"):
        load_recipe("bert_huge")


def flat_keys(config, prefix=""):
    return {k for key, value in config.items()
            for k in (flat_keys(value, f"{prefix}{key}.") if isinstance(value, ConfigDict) and key != "model_overrides"
                      else [f"{prefix}{key}"])}


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES_DIR.glob("*.py")))
def test_every_recipe_sets_only_known_keys_and_names_a_model_task_and_optimizer_that_exist(name):
    import zoo
    from train.loop import make_optimizer_from_config
    from train.tasks import get_task

    config = load_recipe(name)
    assert flat_keys(config) <= flat_keys(base_config()), flat_keys(config) - flat_keys(base_config())
    model = zoo.create(config.model, task=get_task(config.task).head, **config.model_overrides)
    assert zoo.param_count(model) > 0  # the overrides fit the preset (abstract: nothing is allocated)
    make_optimizer_from_config(config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert_tiny", "albert_tiny", "gpt_tiny", "llama_tiny", "transformer_tiny", "t5_tiny"])
def test_tiny_recipe_loss_falls_over_its_first_steps(name, tmp_path):
    from train.tasks import make_datasets
    from train.loop import create_model, train_and_evaluate
    from train.metrics import read_metrics

    config = load_recipe(name)
    config.train.update(dict(steps=120, batch_size=16, log_every=10, eval_every=0))
    config.schedule.warmup_steps = 12
    config.checkpoint.every_steps = 120
    model, _ = create_model(config)
    datasets = make_datasets(config, model)
    train_and_evaluate(config, str(tmp_path), datasets.train, model=model, show_progress=False)
    losses = [row["loss"] for row in read_metrics(str(tmp_path)) if "loss" in row]
    assert len(losses) == 12
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    print(name, losses)
    assert last < first - 0.3, (name, losses)


def run_cli(workdir, *overrides):
    return subprocess.run([sys.executable, "-m", "train", "--config", os.path.join(REPO, "configs", "bert_tiny.py"),
                           "--workdir", str(workdir), "--config.train.steps=6", "--config.train.log_every=2",
                           "--config.train.eval_every=3", "--config.checkpoint.every_steps=3",
                           "--config.schedule.warmup_steps=2", *overrides],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)


@pytest.mark.slow
def test_entry_point_trains_shows_fill_in_and_resumes(tmp_path):
    first = run_cli(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "filling in [MASK] (held-out sentences):" in first.stdout and "loss curve:" in first.stdout
    assert "parameters on 2 device(s)" in first.stdout  # the recipe's train.cpu_devices, over XLA_FLAGS' one
    assert "the same sentences before training" in first.stdout
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert any("eval_mlm_loss" in r for r in rows)
    assert (tmp_path / "loss.png").exists() and os.listdir(tmp_path / "events")
    longer = run_cli(tmp_path, "--config.train.steps=9")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "resumed from" in longer.stdout and "at step 6" in longer.stdout
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "9"]


def test_broken_config_is_a_clear_error_before_training(tmp_path):
    bad_mesh = run_cli(tmp_path, "--config.mesh.data=3")
    assert bad_mesh.returncode != 0
    assert "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but there are 2" in bad_mesh.stderr  # train.cpu_devices
    on_one_device = run_cli(tmp_path, "--config.mesh.data=3", "--config.train.cpu_devices=0")  # XLA_FLAGS' count
    assert "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but there are 1" in on_one_device.stderr
    bad_model = run_cli(tmp_path, "--config.model_overrides.num_heads=5")
    assert "hidden_size=128 is not divisible by num_heads=5" in bad_model.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


TWO_HOSTS = r"""
import os, sys
sys.path.insert(0, {repo!r})
import jax
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id={pid})
import numpy as np
from tests.train_helpers import SyntheticBatches, tiny_config
from train.loop import train_and_evaluate
config = tiny_config(steps=3, every_steps=3)
batches = SyntheticBatches(process_index={pid}, process_count=2)
state, metrics = train_and_evaluate(config, {workdir!r}, batches, show_progress=False)
kernel = state.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
print("RESULT", jax.process_index(), jax.device_count(), repr(metrics["loss"]),
      repr(float(jax.jit(lambda k: (k * k).sum())(kernel))))
"""


@pytest.mark.slow
def test_two_processes_with_jax_distributed_train_as_one(tmp_path):
    results = run_two_hosts(TWO_HOSTS, tmp_path / "run", timeout=900)
    assert sorted(r[0] for r in results) == ["0", "1"] and all(r[1] == "4" for r in results)
    assert results[0][2:] == results[1][2:]  # same loss and same parameters on both hosts
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3"]


def test_fine_tuning_starts_from_the_pretrained_weights_named_by_init_from(tmp_path):
    import chex
    import jax

    import zoo
    from tests.train_helpers import SyntheticBatches, tiny_config
    from train.loop import train_and_evaluate

    pretrained = zoo.create("bert-tiny", task="mlm")
    # weights unlike any init, from shapes alone (compiling the random init would cost more than the test)
    shapes = __import__("flax").linen.unbox(jax.eval_shape(pretrained.init, jax.random.key(3),
                                                           np.ones((1, 8), np.int32))["params"])
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.05, s.shape).astype(s.dtype), shapes)
    zoo.save_pretrained(pretrained, params, str(tmp_path / "pretrained"))
    config = tiny_config(steps=3, every_steps=3)
    config.init_from = str(tmp_path / "pretrained")
    config.optimizer.learning_rate = 0.0  # no update: what comes out is what went in
    state, _ = train_and_evaluate(config, str(tmp_path / "run"), SyntheticBatches(), show_progress=False)
    _, loaded = zoo.from_pretrained(str(tmp_path / "pretrained"), task="mlm")
    chex.assert_trees_all_close(jax.device_get(state.params["encoder"]), jax.device_get(loaded["encoder"]))


@pytest.mark.slow
def test_span_qa_fine_tuning_learns_to_point_at_the_asked_word(tmp_path):
    import re

    from tests.train_helpers import tiny_config
    from train import data
    from train.loop import train_and_evaluate
    from train.metrics import read_metrics

    rng = np.random.default_rng(0)
    records = []
    for document in data.shipped_documents()[:200]:
        for sentence in document[:5]:
            words = [m for m in re.finditer(r"[a-z]{4,}", sentence.lower())]
            if len(sentence) < 200 and words:
                word = words[rng.integers(len(words))]
                records.append((word.group(), sentence.lower(), word.start(), word.group()))
    batches = data.question_answering_batches(records, data.shipped_tokenizer(), batch_size=16, max_length=64,
                                              doc_stride=16)
    config = tiny_config(model="bert-tiny", task="question_answering", steps=150, every_steps=150)
    config.model_overrides.dropout_rate = 0.0
    config.optimizer.learning_rate = 3e-3
    config.schedule.warmup_steps = 15
    config.train.log_every = 10
    train_and_evaluate(config, str(tmp_path), batches, show_progress=False)
    losses = [row["loss"] for row in read_metrics(str(tmp_path)) if "loss" in row]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.5, losses


@pytest.mark.slow
def test_t5_pre_trained_by_its_recipe_exports_and_fine_tunes_on_dates_from_init_from(tmp_path):
    import chex
    import jax
    import torch
    import transformers

    from train.loop import create_model, export_model, train_and_evaluate
    from train.metrics import read_metrics
    from train.tasks import make_datasets

    pre = load_recipe("t5_tiny")
    pre.train.update(dict(steps=20, batch_size=8, log_every=10, eval_every=0))
    pre.schedule.warmup_steps = 2
    pre.checkpoint.every_steps = 20
    model, _ = create_model(pre)
    datasets = make_datasets(pre, model)
    state, _ = train_and_evaluate(pre, str(tmp_path / "pre"), datasets.train, model=model, show_progress=False)
    exported = tmp_path / "pre" / "model"
    assert export_model(model, state.params, datasets.tokenizer, str(exported)) is None
    reference = transformers.T5ForConditionalGeneration.from_pretrained(exported).eval()  # transformers reads it
    ids = np.array([[5, 6, 7, 1]])
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(ids)).logits.numpy()
    ours = model.apply({"params": state.params}, ids, ids).logits
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

    fine = load_recipe("t5_dates_finetune")
    fine.init_from = str(exported)
    fine.train.update(dict(steps=100, batch_size=16, log_every=10, eval_every=0))
    fine.checkpoint.every_steps = 100
    fine_model, start = create_model(fine)
    chex.assert_trees_all_close(start, jax.device_get(state.params))  # it starts from the pre-trained weights
    fine_data = make_datasets(fine, fine_model)
    assert fine_data.tokenizer.token_to_id("<extra_id_0>") == 1123  # the checkpoint's tokenizer, sentinels and all
    train_and_evaluate(fine, str(tmp_path / "fine"), fine_data.train, model=fine_model, initial_params=start,
                       show_progress=False)
    losses = [row["loss"] for row in read_metrics(str(tmp_path / "fine")) if "loss" in row]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 1.0, losses


def test_export_names_why_a_model_has_no_public_format(tmp_path):
    import zoo
    from train.loop import export_model

    model = zoo.create("bert-tiny", task="mlm", position_embedding="relative_bias")
    problem = export_model(model, {}, None, str(tmp_path / "model"))
    assert "config fields a bert config.json cannot express: position_embedding='relative_bias'" in problem
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_llama_lora_recipe_trains_the_adapters_of_its_checkpoint_and_exports_them_merged_and_for_peft(tmp_path):
    import flax.linen as nn
    import jax
    import torch
    import transformers

    import zoo
    from train.loop import create_model, export_adapter, export_model, train_and_evaluate
    from zoo.lora import is_adapter
    from train.metrics import read_metrics
    from train.tasks import make_datasets

    base = load_recipe("llama_tiny")
    base_model, _ = create_model(base)
    base_params = nn.unbox(base_model.init(jax.random.key(0), *zoo.registry.example_inputs(base_model)))["params"]
    assert export_model(base_model, base_params, make_datasets(base, base_model).tokenizer,
                        str(tmp_path / "base")) is None

    config = load_recipe("llama_lora")
    config.init_from = str(tmp_path / "base")
    config.train.update(dict(steps=40, batch_size=8, log_every=10, eval_every=0))
    config.schedule.warmup_steps = 4
    config.checkpoint.every_steps = 40
    model, start = create_model(config)
    datasets = make_datasets(config, model)
    initial = jax.device_get(start)  # the step donates its input buffers
    state, _ = train_and_evaluate(config, str(tmp_path / "run"), datasets.train, model=model, initial_params=start,
                                  show_progress=False)
    losses = [row["loss"] for row in read_metrics(str(tmp_path / "run")) if "loss" in row]
    assert losses[-1] < losses[0] - 0.1, losses  # from a random base: the adapters alone move it
    trained = jax.device_get(state.params)
    flat_start, flat_trained = (dict(jax.tree_util.tree_flatten_with_path(p)[0]) for p in (initial, trained))
    for path, value in flat_trained.items():
        if is_adapter(path):
            continue
        np.testing.assert_array_equal(value, flat_start[path], err_msg=jax.tree_util.keystr(path))  # frozen
    assert any(np.abs(v).max() > 0 for p, v in flat_trained.items() if "lora_b_" in jax.tree_util.keystr(p))

    assert export_model(model, trained, datasets.tokenizer, str(tmp_path / "model")) is None
    assert export_adapter(model, trained, str(tmp_path / "adapter")) is None
    ids = np.array([[5, 6, 7, 8, 9]])
    ours = np.asarray(model.apply({"params": trained}, ids).logits)
    merged = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        np.testing.assert_allclose(merged(torch.tensor(ids)).logits.numpy(), ours, atol=1e-4)
    reloaded = zoo.load_adapter(model, initial, tmp_path / "adapter")  # the checkpoint's weights + the saved adapters
    np.testing.assert_allclose(model.apply({"params": reloaded}, ids).logits, ours, atol=1e-6)


def test_the_command_line_sets_a_model_field_the_recipe_does_not_and_names_a_misspelt_one():
    from absl import app

    from train.__main__ import split_model_overrides

    argv = ["train", "--config", "c.py", "--config.model_overrides.lora_rank=8",
            "--config.model_overrides.position_embedding", "rotary", "--config.model_overrides.label_names=('O', 'B')",
            "--config.train.steps=3"]
    rest, overrides = split_model_overrides(argv)
    assert rest == ["train", "--config", "c.py", "--config.train.steps=3"]
    assert overrides == {"lora_rank": 8, "position_embedding": "rotary", "label_names": ("O", "B")}
    with pytest.raises(app.UsageError, match=r"'lora_rnak' is not a zoo.Config field \(did you mean lora_rank"):
        split_model_overrides(["train", "--config.model_overrides.lora_rnak=8"])
    with pytest.raises(app.UsageError, match="has no value"):
        split_model_overrides(["train", "--config.model_overrides.causal"])


@pytest.mark.slow
def test_python_m_train_takes_a_lora_rank_the_recipe_lacks(tmp_path):
    result = run_cli(tmp_path, "--config.model_overrides.lora_rank=4", "--config.train.steps=3",
                     "--config.optimizer.lr_multipliers=")  # the frozen bias table takes no learning rate
    assert result.returncode == 0, result.stderr[-3000:]
    # the run had adapters (it says why peft's layout cannot hold them: bert_tiny's relative positions)
    assert "adapter:     not exported: LoRA adapters of this model cannot be written in peft's layout" in result.stdout
