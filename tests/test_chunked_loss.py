"""The chunked LM loss (`loss.logits_chunk`): the same values and gradients as the whole logits', and the memory it
promises in XLA's own plan of the step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from train import losses

# tied (GPT-2), untied (Llama), tied and rescaled (T5 v1.0), a logits bias (BART's final_logits_bias)
HEADS = [("gpt-tiny", "causal_lm"), ("llama-tiny", "causal_lm"), ("t5-tiny", "seq2seq"), ("bart-tiny", "seq2seq")]


def loss_and_grads(model, params, args, labels, chunk):
    def loss(p):
        out = model.apply({"params": p}, *args, **({"logits_chunk": chunk} if chunk else {}))
        assert (out.logits is None) == bool(chunk)  # chunked: the [batch, length, vocab] logits are never made
        sums = losses.vocab_cross_entropy(out, labels, label_smoothing=0.1)
        return sums[0] / sums[2], sums

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.mark.parametrize("name, task", HEADS)
def test_chunked_loss_equals_the_whole_logits_loss_in_value_and_gradient(name, task):
    model = zoo.create(name, task=task)
    ids = jnp.arange(2 * 13).reshape(2, 13) % 50 + 3
    args = (ids,) if task == "causal_lm" else (ids, ids[:, :11])
    labels = args[-1].at[1, 5:].set(-100)  # a padded row
    params = nn.unbox(model.init(jax.random.key(0), *args))["params"]
    (whole, whole_sums), whole_grads = loss_and_grads(model, params, args, labels, 0)
    for chunk in (4, 16):  # 4 does not divide the length (the last chunk is padded); 16 is one chunk
        (chunked, sums), grads = loss_and_grads(model, params, args, labels, chunk)
        np.testing.assert_allclose(chunked, whole, rtol=1e-6)
        np.testing.assert_allclose(sums[1:], whole_sums[1:])  # the same argmax hits and weights
        for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(whole_grads)):
            np.testing.assert_allclose(g, w, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_a_chunk_on_a_head_without_per_position_vocab_logits_is_an_error():
    model = zoo.create("bert-tiny", task="mlm")
    ids = jnp.ones((1, 4), jnp.int32)
    params = nn.unbox(model.init(jax.random.key(0), ids))["params"]
    with pytest.raises(ValueError, match="logits_chunk=8 needs an LM head over every position .* task 'mlm'"):
        model.apply({"params": params}, ids, logits_chunk=8)


def planned_temp_bytes(model, chunk, batch, length):
    from train.optimizer import make_optimizer, make_schedule
    from train.partitioning import RULES, make_mesh
    from train.step import abstract_train_state, compile_steps
    from train.tasks import TASKS

    schedule = make_schedule("constant", peak_value=1e-4, warmup_steps=0, total_steps=10)
    tx = make_optimizer(schedule)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    state, shardings = abstract_train_state(model, tx, mesh)
    train_step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS["causal_lm"], logits_chunk=chunk)
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        compiled = train_step.jitted.lower(state, {"input_ids": ids, "attention_mask": ids},
                                           jax.eval_shape(lambda: jax.random.key(0))).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_the_chunked_step_plans_no_whole_logits():
    """XLA's plan of the train step (deterministic: no timing): whole, the step holds [tokens, vocab] float32 logits
    several times over (logits, log-softmax, gradient); chunked by 16 positions, an eighth of one at a time, so its
    temporaries (the rest of the step included) stay under one and a half logits' worth."""
    model = zoo.create("gpt-tiny", task="causal_lm", vocab_size=16384)
    batch, length = 8, 128
    logits_bytes = batch * length * 16384 * 4  # 64 MiB
    whole, chunked = (planned_temp_bytes(model, chunk, batch, length) for chunk in (0, 16))
    assert whole - chunked > 3 * logits_bytes, (whole, chunked)
    assert chunked < 1.5 * logits_bytes, (whole, chunked)


def test_chunked_train_steps_on_a_data_fsdp_tensor_mesh_equal_whole_logits_on_one_device():
    import chex

    from tests.test_train import make_batch, run_steps
    from train.partitioning import make_mesh

    model = zoo.create("gpt-tiny", task="causal_lm", dropout_rate=0.0, attention_dropout_rate=0.0)
    batch = make_batch("causal_lm")
    whole_params, whole_losses = run_steps(model, make_mesh(1, 1, 1, devices=jax.devices()[:1]), batch)
    chunked_params, chunked_losses = run_steps(model, make_mesh(2, 2, 2), batch, logits_chunk=5)
    np.testing.assert_allclose(chunked_losses, whole_losses, atol=1e-5)
    chex.assert_trees_all_close(chunked_params, whole_params, atol=1e-5)
