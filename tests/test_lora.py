"""LoRA: adapters that start as a no-op, fold into their base weights, and name what they adapt."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from tests.model_helpers import random_params
from train.optimizer import make_optimizer
from train.partitioning import RULES
from zoo.lora import is_adapter, merge_lora, param_names, trainable_mask

EVERY_TARGET = ("query", "key", "value", "out", "wi", "wi_0", "wi_1", "wo")
MODELS = [("bert-tiny", "mlm", {}), ("llama-tiny", "causal_lm", {}), ("t5-tiny", "seq2seq", {}),
          ("gpt-tiny", "causal_lm", {"scan_layers": True}), ("albert-tiny", "mlm", {})]


def inputs(model):
    ids = jnp.arange(16).reshape(2, 8) % 50 + 3
    return (ids, ids) if isinstance(model, zoo.EncoderDecoderTransformer) else (ids,)


def without_adapters(tree):
    return jax.tree_util.tree_map_with_path(lambda path, x: None if is_adapter(path) else x, tree)


@pytest.mark.parametrize("name, task, overrides", MODELS)
def test_a_freshly_adapted_model_computes_exactly_what_its_base_does(name, task, overrides):
    base = zoo.create(name, task=task, **overrides)
    adapted = zoo.create(name, task=task, lora_rank=4, lora_targets=EVERY_TARGET, **overrides)
    params = nn.unbox(adapted.init(jax.random.key(0), *inputs(adapted))["params"])
    adapters = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0] if is_adapter(path)]
    assert adapters
    base_params = without_adapters(params)
    out = adapted.apply({"params": params}, *inputs(adapted)).logits
    np.testing.assert_array_equal(out, base.apply({"params": base_params}, *inputs(base)).logits)


@pytest.mark.parametrize("name, task, overrides", MODELS)
def test_merged_adapters_give_the_adapted_models_outputs(name, task, overrides):
    adapted = zoo.create(name, task=task, lora_rank=4, lora_alpha=8.0, lora_targets=EVERY_TARGET, **overrides)
    params = random_params(adapted, *inputs(adapted), scale=0.1)["params"]  # lora_b no longer zero
    merged_model, merged = merge_lora(adapted, params)
    assert merged_model.config.lora_rank == 0
    assert not [p for p, _ in jax.tree_util.tree_flatten_with_path(merged)[0] if is_adapter(p)]
    shapes = jax.eval_shape(merged_model.init, jax.random.key(0), *inputs(merged_model))["params"]
    chex.assert_trees_all_equal_shapes(nn.unbox(shapes), merged)
    adapted_out = adapted.apply({"params": params}, *inputs(adapted)).logits
    assert float(jnp.abs(adapted_out - zoo.create(name, task=task, **overrides).apply(
        {"params": without_adapters(params)}, *inputs(adapted)).logits).max()) > 1e-2  # the adapters matter
    np.testing.assert_allclose(merged_model.apply({"params": merged}, *inputs(merged_model)).logits, adapted_out,
                               atol=1e-5)


def test_lora_targets_the_blocks_do_not_have_are_named():
    with pytest.raises(ValueError, match=r"lora_targets \['q_proj'\] are not projections zoo's blocks have"):
        zoo.get_config("llama-tiny").replace(lora_rank=8, lora_targets=("q_proj",))
    with pytest.raises(ValueError, match="LoRA needs lora_rank >= 0, lora_alpha > 0"):
        zoo.get_config("llama-tiny").replace(lora_rank=8, lora_alpha=0.0)


def lora_setup(model, trainable, mesh=None, grad_accum_steps=1):
    """(the initial state, the compiled train step, the batches) of a LoRA (or, trainable=None, full) fine-tune."""
    from tests.train_helpers import SyntheticBatches
    from train.partitioning import make_mesh
    from train.step import compile_steps, init_train_state
    from train.tasks import TASKS

    mesh = mesh or make_mesh(1, 1, 1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(1e-2)
    tx = make_optimizer(schedule, trainable=trainable, grad_accum_steps=grad_accum_steps)
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS[model.task], trainable=trainable,
                            grad_accum_steps=grad_accum_steps)
    return state, step, SyntheticBatches(task="mlm")


def run(state, step, batches, steps=3):
    losses = []
    for _ in range(steps):
        state, metrics = step(state, next(batches), jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return state, losses


def adapted_bert(**overrides):
    return zoo.create("bert-tiny", task="mlm", lora_rank=4, dropout_rate=0.0, attention_dropout_rate=0.0, **overrides)


def test_lora_training_updates_only_the_adapters_and_keeps_no_optimizer_state_for_the_rest():
    state, step, batches = lora_setup(adapted_bert(), trainable_mask)
    start = jax.device_get(state.params)
    state, losses = run(state, step, batches)
    end = jax.device_get(state.params)
    moved = jax.tree_util.tree_map_with_path(lambda path, a, b: (is_adapter(path), bool((a != b).any())), start, end)
    flags = jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple))
    assert all(changed for adapter, changed in flags if adapter)
    assert not any(changed for adapter, changed in flags if not adapter)  # the base: bit-identical
    adapter_size = sum(x.size for p, x in jax.tree_util.tree_flatten_with_path(end)[0] if is_adapter(p))
    state_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
    assert adapter_size * 2 <= state_size <= adapter_size * 2 + 8  # Adam's two moments of the adapters, and counts
    assert losses[-1] < losses[0]


def test_lora_trains_with_remat_scan_bf16_and_gradient_accumulation():
    # one model with every switch: each compile costs seconds
    model, grad_accum_steps = adapted_bert(scan_layers=True, remat="full", dtype=jnp.bfloat16), 2
    state, step, batches = lora_setup(model, trainable_mask, grad_accum_steps=grad_accum_steps)
    start = jax.device_get(state.params)
    state, _ = run(state, step, batches, steps=2 * grad_accum_steps)
    end = jax.device_get(state.params)
    flat = {tuple(param_names(p)): (is_adapter(p), a, b) for (p, a), (_, b) in
            zip(jax.tree_util.tree_flatten_with_path(start)[0], jax.tree_util.tree_flatten_with_path(end)[0])}
    assert all((a != b).any() for adapter, a, b in flat.values() if adapter)
    assert all((a == b).all() for adapter, a, b in flat.values() if not adapter)  # the base: bit-identical
    adapter_size = sum(a.size for adapter, a, _ in flat.values() if adapter)
    state_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
    # Adam's two moments and MultiSteps' gradient sum, of the adapters only, and step counts
    assert adapter_size * 3 <= state_size <= adapter_size * 3 + 16


def test_frozen_weights_get_no_gradient_computed():
    from train.partitioning import make_mesh

    model = adapted_bert()
    flops = []
    for trainable in (trainable_mask, None):  # LoRA, then the same model fully fine-tuned
        state, step, batches = lora_setup(model, trainable)
        with jax.set_mesh(make_mesh(1, 1, 1, devices=jax.devices()[:1])), nn.logical_axis_rules(RULES):
            compiled = step.jitted.lower(state, next(batches), jax.random.key(1)).compile()
        flops.append(compiled.cost_analysis()["flops"])
    assert flops[0] < 0.85 * flops[1], flops  # no weight gradients for the frozen kernels


def test_lora_on_a_data_fsdp_tensor_mesh_equals_one_device():
    from train.partitioning import make_mesh

    model = adapted_bert(lora_targets=("query", "key", "value", "out", "wi", "wo"))
    single = run(*lora_setup(model, trainable_mask))
    sharded = run(*lora_setup(model, trainable_mask, mesh=make_mesh(2, 2, 2)))
    np.testing.assert_allclose(sharded[1], single[1], atol=1e-5)
    chex.assert_trees_all_close(jax.device_get(sharded[0].params), jax.device_get(single[0].params), atol=1e-5)


def test_a_checkpoint_loaded_with_lora_gets_fresh_adapters_and_the_same_outputs(tmp_path):
    from tests.test_checkpoints import saved

    model, params = saved(tmp_path, "bert-tiny", task="mlm")
    adapted, loaded = zoo.from_pretrained(tmp_path, lora_rank=4, lora_targets=("query", "value", "wo"))
    assert [p for p, _ in jax.tree_util.tree_flatten_with_path(loaded)[0] if is_adapter(p)]
    ids = jnp.arange(16).reshape(2, 8) % 50 + 3
    np.testing.assert_array_equal(adapted.apply({"params": loaded}, ids).logits,
                                  model.apply({"params": params}, ids).logits)


def test_lora_options_of_a_recipe_are_checked_before_training():
    from tests.train_helpers import tiny_config
    from train.loop import lora_trainable

    config = tiny_config()
    config.optimizer.lora_also_train = "head"
    with pytest.raises(ValueError, match="optimizer.lora_also_train='head' needs LoRA adapters"):
        lora_trainable(config, zoo.create("bert-tiny", task="mlm"))
    config.optimizer.lora_also_train = "head, embeddings"
    with pytest.raises(ValueError, match=r"optimizer.lora_also_train names \['embeddings'\]"):
        lora_trainable(config, adapted_bert())
    config.optimizer.lora_also_train = "head,biases"
    params = nn.unbox(adapted_bert().init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"])
    mask = lora_trainable(config, adapted_bert())(params)
    assert mask["mlm_head"]["dense"]["kernel"] and mask["encoder"]["layers_0"]["mlp"]["wi"]["bias"]
    assert not mask["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert mask["encoder"]["layers_0"]["attention"]["qkv"]["lora_b_value"]


# (preset, task, transformers class, the zoo targets, peft's target_modules for the same projections, overrides)
PEFT_MODELS = [
    ("bert-tiny", "sequence_classification", "BertForSequenceClassification",
     ("query", "key", "value", "out", "wi", "wo"),
     ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"], {"num_labels": 3}),
    ("llama-tiny", "causal_lm", "LlamaForCausalLM", ("query", "key", "value", "out", "wi_0", "wi_1", "wo"),
     ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], {"scan_layers": True}),
    # GPT-2's unfused Conv1D projections (its fused c_attn: test_what_peft_cannot_express_is_refused_by_name)
    ("gpt-tiny", "causal_lm", "GPT2LMHeadModel", ("out", "wi", "wo"), ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"], {}),
    # an encoder-decoder (cross-attention's fused key_value) and ALBERT's one shared layer
    ("t5-tiny", "seq2seq", "T5ForConditionalGeneration", ("query", "key", "value", "out", "wo"),
     ["q", "k", "v", "o", "wo"], {}),
    ("albert-tiny", "mlm", "AlbertForMaskedLM", ("query", "value"), ["query", "value"], {}),
]


def adapted_and_base(tmp_path, preset, task, targets, overrides):
    """(the adapted zoo model, random non-zero params with adapters, the transformers model of its base weights)."""
    transformers = pytest.importorskip("transformers")
    from tests.test_checkpoints import zoo_params

    model = zoo.create(preset, task=task, lora_rank=4, lora_alpha=8.0, lora_targets=targets, **overrides)
    params = zoo_params(model)
    zoo.save_pretrained(zoo.create(preset, task=task, **overrides), without_adapters_dict(params), tmp_path / "base")
    torch_model = getattr(transformers, TORCH_CLASSES[preset]).from_pretrained(tmp_path / "base").eval()
    return model, params, torch_model


TORCH_CLASSES = {preset: cls for preset, _, cls, *_ in PEFT_MODELS}


def without_adapters_dict(params):
    return {k: without_adapters_dict(v) if isinstance(v, dict) else v for k, v in params.items()
            if not k.startswith(("lora_a_", "lora_b_"))}


def compare(model, params, torch_model, task):
    from tests.test_checkpoints import batch, torch_outputs, zoo_outputs

    inputs = batch(model.config.family)
    ours, theirs = zoo_outputs(model, params, inputs, task), torch_outputs(torch_model, inputs, task)
    keep = inputs["attention_mask"].astype(bool) if task != "sequence_classification" else slice(None)
    np.testing.assert_allclose(ours["logits"][keep], theirs["logits"][keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset, task, torch_class, targets, peft_targets, overrides", PEFT_MODELS)
def test_an_adapter_zoo_saves_loads_in_peft_with_the_same_outputs(tmp_path, preset, task, torch_class, targets,
                                                                  peft_targets, overrides):
    peft = pytest.importorskip("peft")
    model, params, torch_model = adapted_and_base(tmp_path, preset, task, targets, overrides)
    zoo.save_adapter(model, params, tmp_path / "adapter")
    compare(model, params, peft.PeftModel.from_pretrained(torch_model, tmp_path / "adapter").eval(), task)


@pytest.mark.parametrize("preset, task, torch_class, targets, peft_targets, overrides", PEFT_MODELS)
def test_an_adapter_peft_saves_loads_in_zoo_with_the_same_outputs(tmp_path, preset, task, torch_class, targets,
                                                                  peft_targets, overrides):
    peft = pytest.importorskip("peft")
    model, params, torch_model = adapted_and_base(tmp_path, preset, task, targets, overrides)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=peft_targets, init_lora_weights=False)
    peft_model = peft.get_peft_model(torch_model, lora).eval()
    peft_model.save_pretrained(tmp_path / "peft")
    loaded = zoo.load_adapter(model, params, tmp_path / "peft")
    compare(model, loaded, peft_model, task)


def test_save_adapter_refuses_what_peft_cannot_express_and_load_adapter_names_the_bad_file(tmp_path):
    gpt = zoo.create("gpt-tiny", task="causal_lm", lora_rank=4)
    with pytest.raises(ValueError, match="peft adapts the fused transformer.h.0.attn.c_attn with one A"):
        zoo.save_adapter(gpt, nn.unbox(gpt.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]), tmp_path)
    model = zoo.create("bert-tiny", task="mlm", lora_rank=4)
    params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"])
    zoo.save_adapter(model, params, tmp_path / "adapter")
    wider = zoo.create("bert-tiny", task="mlm", lora_rank=8)
    with pytest.raises(ValueError, match=r"adapter_config.json: r=4 but the model has 8"):
        zoo.load_adapter(wider, nn.unbox(wider.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]),
                         tmp_path / "adapter")
    more = zoo.create("bert-tiny", task="mlm", lora_rank=4, lora_targets=("query", "value", "wo"))
    with pytest.raises(ValueError, match=r"adapter_config.json: target_modules=.* do not adapt all the modules .*output.dense"):
        zoo.load_adapter(more, nn.unbox(more.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]),
                         tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="adapter_model.safetensors is not a readable safetensors file"):
        zoo.load_adapter(model, params, tmp_path / "adapter")


def saved_adapter(folder, **overrides):
    """A BERT classifier with random non-zero adapters, its adapter written to `folder`; returns (model, params)."""
    from tests.test_checkpoints import zoo_params

    model = zoo.create("bert-tiny", task="sequence_classification", lora_rank=4, **overrides)
    params = zoo_params(model)
    zoo.save_adapter(model, params, folder)
    return model, params


def test_an_adapter_zoo_saves_reads_back_to_the_same_params(tmp_path):
    model, params = saved_adapter(tmp_path)
    fresh = nn.unbox(model.init(jax.random.key(3), *inputs(model))["params"])
    loaded = zoo.load_adapter(model, fresh, tmp_path)
    adapters_and_head = jax.tree_util.tree_map_with_path(
        lambda path, x: x if is_adapter(path) or path[0].key == "classifier" else None, params)
    chex.assert_trees_all_equal(jax.tree_util.tree_map_with_path(
        lambda path, x: x if is_adapter(path) or path[0].key == "classifier" else None, loaded), adapters_and_head)


def test_an_adapter_of_another_rank_or_target_or_a_corrupt_file_is_named(tmp_path):
    saved_adapter(tmp_path)
    other_rank = zoo.create("bert-tiny", task="sequence_classification", lora_rank=8)
    with pytest.raises(ValueError, match=r"adapter_config.json: r=4 but the model has 8"):
        zoo.load_adapter(other_rank, nn.unbox(other_rank.init(jax.random.key(0), *inputs(other_rank))["params"]),
                         tmp_path)
    more_targets = zoo.create("bert-tiny", task="sequence_classification", lora_rank=4,
                              lora_targets=("query", "value", "wo"))
    with pytest.raises(ValueError, match=r"adapter_config.json: target_modules=.* do not adapt .*output.dense"):
        zoo.load_adapter(more_targets, nn.unbox(more_targets.init(jax.random.key(0), *inputs(more_targets))["params"]),
                         tmp_path)
    model = zoo.create("bert-tiny", task="sequence_classification", lora_rank=4)
    params = nn.unbox(model.init(jax.random.key(0), *inputs(model))["params"])
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"adapter_model.safetensors is not a readable safetensors file"):
        zoo.load_adapter(model, params, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{")
    with pytest.raises(ValueError, match=r"adapter_config.json"):
        zoo.load_adapter(model, params, tmp_path)


def test_what_peft_cannot_express_is_refused_by_name(tmp_path):
    gpt = zoo.create("gpt-tiny", task="causal_lm", lora_rank=4, lora_targets=("query", "value"))
    params = nn.unbox(gpt.init(jax.random.key(0), *inputs(gpt))["params"])
    with pytest.raises(ValueError, match=r"peft adapts the fused .*c_attn with one A"):
        zoo.save_adapter(gpt, params, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    with pytest.raises(ValueError, match=r"zoo.merge_lora\(model, params\), or .* zoo.save_adapter"):
        zoo.save_pretrained(gpt, params, tmp_path)
