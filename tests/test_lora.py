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
from zoo.lora import is_adapter, merge_lora, trainable_mask

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


def lora_setup(model, trainable, mesh=None):
    """(the initial state, the compiled train step, the batches) of a LoRA (or, trainable=None, full) fine-tune."""
    from tests.train_helpers import SyntheticBatches
    from train.partitioning import make_mesh
    from train.step import compile_steps, init_train_state
    from train.tasks import TASKS

    mesh = mesh or make_mesh(1, 1, 1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(1e-2)
    tx = make_optimizer(schedule, trainable=trainable)
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS[model.task], trainable=trainable)
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
