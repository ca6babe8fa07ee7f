"""The training side: schedules, masks, losses, the sharded step, accumulation, checkpoints and resume."""

import os
import re
import signal
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from tests.model_helpers import random_params
from tests.train_helpers import SyntheticBatches, tiny_config
from train.checkpointing import Checkpointer, abstract_like
from train.losses import cross_entropy, next_token_targets, top_class
from train.loop import NonFiniteLoss, prefetch_to_device, train_and_evaluate
from train.metrics import read_metrics
from train.optimizer import make_optimizer, make_schedule, parse_lr_multipliers, weight_decay_mask
from train.partitioning import make_mesh
from train.step import compile_steps, init_train_state
from train.showcase import untrained_params
from train.tasks import TASKS, Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_linear_schedule_warms_up_then_decays_to_the_end_value():
    s = make_schedule("linear", peak_value=1e-4, warmup_steps=10, total_steps=110, end_value=1e-6)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 5e-5, 1e-4, (1e-4 + 1e-6) / 2, 1e-6],
                               rtol=1e-5)


def test_rsqrt_schedule_is_the_formula_of_vaswani_et_al():
    d, warmup = 512, 4000
    s = make_schedule("rsqrt", peak_value=d ** -0.5 * warmup ** -0.5, warmup_steps=warmup, total_steps=100_000)
    for step in (1, 100, 3999, 4000, 4001, 20000, 99999):
        expected = d ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert float(s(step)) == pytest.approx(expected, rel=1e-5)


def test_constant_rsqrt_schedule_is_t5s_inverse_square_root_of_max_step_and_warmup():
    s = make_schedule("constant_rsqrt", peak_value=0.01, warmup_steps=10_000, total_steps=524_288)
    for step in (0, 1, 5_000, 10_000, 40_000, 524_288):
        assert float(s(step)) == pytest.approx(1 / np.sqrt(max(step, 10_000)), rel=1e-5)


def test_adafactor_keeps_factored_second_moments_and_scales_updates_by_the_parameters_rms():
    params = {"kernel": jnp.full((256, 512), 0.5), "bias": jnp.zeros((512,))}
    grads = {"kernel": jnp.ones((256, 512)), "bias": jnp.ones((512,))}
    tx = make_optimizer(optax.constant_schedule(0.01), name="adafactor", weight_decay=0.0, clip_norm=None)
    state = tx.init(params)
    # a row and a column statistic for the kernel instead of Adam's two full-size moments
    assert sum(x.size for x in jax.tree.leaves(state)) < 0.01 * sum(x.size for x in jax.tree.leaves(params))
    updates, _ = jax.jit(tx.update)(grads, state, params)
    # constant gradients: the normalised update is 1 everywhere, times lr and the kernel's RMS (0.5); the bias's RMS
    # is 0, so Adafactor's floor eps2 = 1e-3 scales it
    np.testing.assert_allclose(updates["kernel"], -0.01 * 0.5, rtol=1e-4)
    np.testing.assert_allclose(updates["bias"], -0.01 * 1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="optimizer 'sgd' is not one of"):
        make_optimizer(optax.constant_schedule(0.01), name="sgd")


def test_with_gradient_accumulation_the_schedule_counts_updates_and_ends_at_the_last_one():
    from train.loop import make_optimizer_from_config

    config = tiny_config(steps=40)
    config.optimizer.grad_accum_steps = 4
    config.schedule.update(dict(name="linear", warmup_steps=2, end_value=0.0))
    schedule, _ = make_optimizer_from_config(config)
    assert float(schedule(2)) == pytest.approx(config.optimizer.learning_rate)  # warm-up: 2 updates, 8 micro-steps
    assert float(schedule(10)) == 0.0  # the 10th update is the run's last
    config.train.steps = 42
    with pytest.raises(ValueError, match="train.steps=42 is not a multiple of optimizer.grad_accum_steps=4"):
        make_optimizer_from_config(config)


def test_cosine_schedule_and_bad_schedules():
    s = make_schedule("cosine", peak_value=1.0, warmup_steps=10, total_steps=110, end_value=0.1)
    np.testing.assert_allclose([s(10), s(60), s(110)], [1.0, 0.55, 0.1], rtol=1e-5)
    with pytest.raises(ValueError, match="need 0 <= warmup_steps < total_steps"):
        make_schedule("linear", peak_value=1.0, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="schedule 'step' is not one of"):
        make_schedule("step", peak_value=1.0, warmup_steps=1, total_steps=10)


def test_weight_decay_spares_layernorm_and_biases():
    model = zoo.create("bert-tiny", task="mlm")
    params = random_params(model, jnp.ones((1, 4), jnp.int32))["params"]
    mask = weight_decay_mask(params)
    layer = mask["encoder"]["layers_0"]
    assert layer["attention"]["qkv"]["kernel"] and mask["token_embedding"]["embedding"]
    assert not layer["attention"]["qkv"]["bias"] and not layer["mlp_norm"]["scale"]
    assert not layer["mlp_norm"]["bias"] and not mask["embeddings"]["embedding_norm"]["scale"]
    # With zero gradients only decoupled weight decay moves a parameter.
    tx = make_optimizer(optax.constant_schedule(0.1), weight_decay=0.5, clip_norm=None)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    kernel = params["encoder"]["layers_0"]["attention"]["qkv"]["kernel"]
    chex.assert_trees_all_close(updates["encoder"]["layers_0"]["attention"]["qkv"]["kernel"], -0.1 * 0.5 * kernel)
    assert float(jnp.abs(updates["encoder"]["layers_0"]["mlp_norm"]["scale"]).max()) == 0.0


def test_lr_multiplier_scales_the_update_of_the_named_parameters_only():
    params = {"encoder": {"relative_position_bias": {"embedding": jnp.full((4, 2), 0.5)},
                          "layers_0": {"kernel": jnp.full((3, 3), 0.5)}}}
    grads = {"encoder": {"relative_position_bias": {"embedding": jnp.full((4, 2), 0.1)},
                         "layers_0": {"kernel": jnp.full((3, 3), -0.2)}}}

    def update(**kwargs):
        tx = make_optimizer(optax.constant_schedule(1e-3), weight_decay=0.01, clip_norm=None, **kwargs)
        return tx.update(grads, tx.init(params), params)[0]["encoder"]

    plain, scaled = update(), update(lr_multipliers=parse_lr_multipliers("relative_position_bias=30"))
    # Adam's first step is lr * sign(g), plus lr * weight_decay * p: both times 30 for the named table only
    chex.assert_trees_all_close(plain["relative_position_bias"]["embedding"], -1e-3 * (1 + 0.01 * 0.5), rtol=1e-4)
    chex.assert_trees_all_close(scaled["relative_position_bias"]["embedding"], -30e-3 * (1 + 0.01 * 0.5), rtol=1e-4)
    chex.assert_trees_all_close(scaled["layers_0"]["kernel"], plain["layers_0"]["kernel"])
    with pytest.raises(ValueError, match=r"names \['relative_bias'\], which no trained parameter's path"):
        update(lr_multipliers={"relative_bias": 30.0})  # a name no parameter has
    with pytest.raises(ValueError, match="'relative_position_bias=fast'"):
        parse_lr_multipliers("relative_position_bias=fast")
    assert parse_lr_multipliers("") == {}


def test_label_smoothed_cross_entropy_equals_the_formula_and_counts_the_argmax_hits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 5))
    labels[1] = logits[1].argmax(-1)  # some right guesses for the accuracy
    labels[0, :2] = -100
    alpha = 0.1
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full_like(log_p, alpha / 11)
    for idx in np.ndindex(labels.shape):
        if labels[idx] >= 0:
            target[idx][labels[idx]] += 1 - alpha
    per_token = -(target * log_p).sum(-1)
    expected = per_token[labels >= 0].sum()
    loss_sum, correct, weight = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=alpha)
    assert float(loss_sum) == pytest.approx(expected, rel=1e-5)
    assert float(weight) == 13
    assert float(correct) == ((logits.argmax(-1) == labels) & (labels >= 0)).sum() >= 5
    optax_loss = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(np.maximum(labels, 0), 11),
                                                                         alpha))
    assert float(loss_sum) == pytest.approx(float(optax_loss[labels >= 0].sum()), rel=1e-5)


def test_top_class_is_argmax_with_ties_going_to_the_first_class():
    logits = np.random.default_rng(0).integers(0, 3, (200, 7)).astype(np.float32)  # most rows tie at the top
    logits[0] = 1.0  # a constant row: class 0, as argmax
    np.testing.assert_array_equal(top_class(jnp.asarray(logits)), logits.argmax(-1))
    assert top_class(jnp.asarray(logits)).dtype == jnp.int32


def test_causal_targets_stay_inside_each_document_and_skip_padding():
    batch = {"input_ids": jnp.array([[10, 11, 12, 20, 21, 0]]), "attention_mask": jnp.array([[1, 1, 1, 1, 1, 0]]),
             "segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]])}
    np.testing.assert_array_equal(next_token_targets(batch), [[11, 12, -100, 21, -100, -100]])


def make_batch(task, rows=8, length=16, seed=0):
    return next(SyntheticBatches(batch_size=rows, length=length, seed=seed, task=task))


def run_steps(model, mesh, batch, steps=3, grad_accum_steps=1, batches=None, **step_kwargs):
    schedule = make_schedule("linear", peak_value=1e-3, warmup_steps=1, total_steps=10)
    tx = make_optimizer(schedule, grad_accum_steps=grad_accum_steps)
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    train_step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS[model.task],
                                  grad_accum_steps=grad_accum_steps, **step_kwargs)
    losses = []
    for i in range(steps):
        state, metrics = train_step(state, batches[i] if batches else batch, jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


@pytest.mark.slow
@pytest.mark.parametrize("name, task, overrides", [
    ("bert-tiny", "mlm", {}), ("gpt-tiny", "causal_lm", {}),
    ("bert-tiny", "mlm", {"attention": "block_sparse", "block_size": 4, "num_random_blocks": 1, "global_tokens": 1}),
    ("gpt-tiny", "causal_lm", {"attention": "sliding_window", "window": 5, "block_size": 4}),
    # T5 v1.1's gated feed-forward and untied head (v1.0's tied head is GPT-2's and BART's case), and BART's body
    # under its classifier (its seq2seq head is the tied one): each parameter kind once, the suite's time in mind
    ("t5-tiny", "seq2seq", {"activation": "gated_gelu", "tie_word_embeddings": False, "scale_tied_logits": False}),
    ("bart-tiny", "sequence_classification", {})])
def test_data_fsdp_tensor_mesh_equals_one_device(name, task, overrides):
    model = zoo.create(name, task=task, dropout_rate=0.0, attention_dropout_rate=0.0, **overrides)
    batch = make_batch(task)
    single_params, single_losses = run_steps(model, make_mesh(1, 1, 1, devices=jax.devices()[:1]), batch)
    sharded_params, sharded_losses = run_steps(model, make_mesh(2, 2, 2), batch)
    np.testing.assert_allclose(sharded_losses, single_losses, atol=1e-5)
    chex.assert_trees_all_close(sharded_params, single_params, atol=1e-5)


def test_gradient_accumulation_of_4_by_2_equals_one_batch_of_8():
    model = zoo.create("gpt-tiny", task="causal_lm", dropout_rate=0.0, attention_dropout_rate=0.0)
    batch = make_batch("causal_lm")
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    whole, _ = run_steps(model, mesh, batch, steps=1)
    micro = [{k: v[2 * i:2 * i + 2] for k, v in batch.items()} for i in range(4)]
    accumulated, _ = run_steps(model, mesh, micro[0], steps=4, grad_accum_steps=4, batches=micro)
    chex.assert_trees_all_close(accumulated, whole, atol=1e-6)


def test_mesh_that_does_not_fit_the_devices_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but there are 8"):
        make_mesh(3, 1, 1)
    with pytest.raises(ValueError, match="does not divide 8 devices"):
        make_mesh(-1, 3, 1)


def test_resumed_run_ends_bitwise_equal_to_the_uninterrupted_one(tmp_path):
    config = tiny_config(steps=6, every_steps=3)
    straight, _ = train_and_evaluate(config, str(tmp_path / "a"), SyntheticBatches(), show_progress=False)
    interrupted = tiny_config(steps=3, every_steps=3)
    train_and_evaluate(interrupted, str(tmp_path / "b"), SyntheticBatches(), show_progress=False)
    resumed, _ = train_and_evaluate(config, str(tmp_path / "b"), SyntheticBatches(), show_progress=False)
    chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(straight.params))
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["3", "6"]
    rows = [line for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert len(rows) == 6 and '"step": 6' in rows[-1] and '"loss"' in rows[-1]
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "b" / "events"))


def test_checkpoint_from_8_devices_restores_onto_2(tmp_path):
    model = zoo.create("bert-tiny", task="mlm")
    tx = make_optimizer(optax.constant_schedule(1e-3))
    state, _ = init_train_state(model, tx, jax.random.key(0), make_mesh(2, 2, 2))
    rng = jax.random.key(7)
    checkpointer = Checkpointer(str(tmp_path), every_steps=1)
    checkpointer.save(1, state, rng, {"position": 4})
    checkpointer.close()
    mesh2 = make_mesh(1, 2, 1, devices=jax.devices()[:2])
    target, shardings = init_train_state(model, tx, jax.random.key(1), mesh2)
    restored, restored_rng, data_state = Checkpointer(str(tmp_path), every_steps=1).restore(
        1, abstract_like(target, shardings), jax.eval_shape(lambda: jax.random.key(0)))
    chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
    assert data_state == {"position": 4} and np.array_equal(jax.random.key_data(restored_rng), jax.random.key_data(rng))
    kernel = restored.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert len(kernel.sharding.device_set) == 2


def test_checkpoint_that_does_not_fit_names_the_mismatch_and_is_left_alone(tmp_path):
    config = tiny_config(steps=3, every_steps=3)
    train_and_evaluate(config, str(tmp_path), SyntheticBatches(), show_progress=False)
    before = sorted(os.listdir(tmp_path / "checkpoints" / "3"))
    wider = tiny_config(steps=6, every_steps=3)
    wider.model_overrides.intermediate_size = 256
    with pytest.raises(ValueError, match=r"(?s)does not fit the model.*mlp/wi/kernel: checkpoint has shape \(64, 128\), "
                                         r"model wants \(64, 256\).*train in another workdir, or delete it"):
        train_and_evaluate(wider, str(tmp_path), SyntheticBatches(), show_progress=False)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
    assert sorted(os.listdir(tmp_path / "checkpoints" / "3")) == before


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(steps=40, every_steps=2)
    config.optimizer.learning_rate = 1e38
    config.optimizer.clip_norm = 0.0
    config.schedule.warmup_steps = 0
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step (\d+); stopping .*The last good checkpoint is step") \
            as stopped:
        train_and_evaluate(config, str(tmp_path), SyntheticBatches(), show_progress=False)
    nan_step = int(re.search(r"at step (\d+)", str(stopped.value)).group(1))
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert all(step < nan_step for step in steps)  # nothing saved from the step that went NaN or after it
    if steps:
        from train.loop import make_optimizer_from_config
        _, tx = make_optimizer_from_config(config)
        target, shardings = init_train_state(zoo.create("bert-tiny", task="mlm"), tx, jax.random.key(0),
                                             make_mesh())
        restored, _, _ = Checkpointer(str(tmp_path / "checkpoints"), every_steps=2).restore(
            steps[-1], abstract_like(target, shardings), jax.eval_shape(lambda: jax.random.key(0)))
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(restored.params))


KILL_DURING_SAVE = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
import jax
import tests.conftest
from tests.model_helpers import random_params
from tests.train_helpers import SyntheticBatches, tiny_config
import train.checkpointing as ckpt

original_save = ckpt.Checkpointer.save
def save_then_die(self, step, *args, **kwargs):
    started = original_save(self, step, *args, **kwargs)
    if step == 4:  # the async write of step 4 has started: die before it can finish
        os.kill(os.getpid(), signal.SIGKILL)
    self.wait()  # make the earlier saves complete, so that only step 4 is in flight
    return started
ckpt.Checkpointer.save = save_then_die
from train.loop import train_and_evaluate
train_and_evaluate(tiny_config(steps=6, every_steps=2), {workdir!r}, SyntheticBatches(), show_progress=False)
"""


def test_process_killed_during_an_async_save_resumes_from_the_previous_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    child = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE.format(repo=REPO, workdir=workdir)],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "4" not in os.listdir(os.path.join(workdir, "checkpoints"))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=2)
    assert checkpointer.latest_step() == 2
    checkpointer.close()
    resumed, _ = train_and_evaluate(tiny_config(steps=6, every_steps=2), workdir, SyntheticBatches(),
                                    show_progress=False)
    straight, _ = train_and_evaluate(tiny_config(steps=6, every_steps=2), str(tmp_path / "straight"),
                                     SyntheticBatches(), show_progress=False)
    chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(straight.params))


def test_logged_train_metrics_are_the_token_weighted_means_of_the_steps_since_the_last_log(tmp_path):
    every_step = tiny_config(steps=4, every_steps=4)
    train_and_evaluate(every_step, str(tmp_path / "each"), SyntheticBatches(), show_progress=False)
    windowed = tiny_config(steps=4, every_steps=4)
    windowed.train.log_every = 2
    train_and_evaluate(windowed, str(tmp_path / "windows"), SyntheticBatches(), show_progress=False)
    steps = read_metrics(str(tmp_path / "each"))
    batches = SyntheticBatches()
    masked = np.array([np.sum(next(batches)["mlm_labels"] >= 0) for _ in range(4)], np.float64)  # the loss's weights
    assert len(set(masked)) > 1  # the steps weigh differently, so a weighted and a plain mean differ
    rows = read_metrics(str(tmp_path / "windows"))
    assert [row["step"] for row in rows] == [2, 4]
    for row, window in zip(rows, (slice(0, 2), slice(2, 4))):
        weights, of_steps = masked[window], steps[window]
        for name in ("mlm_loss", "mlm_accuracy"):
            expected = np.sum(weights * [s[name] for s in of_steps]) / np.sum(weights)
            assert row[name] == pytest.approx(expected, rel=1e-5), name
        assert row["loss"] == pytest.approx(row["mlm_loss"], rel=1e-6)
        assert row["grad_norm"] == pytest.approx(np.mean([s["grad_norm"] for s in of_steps]), rel=1e-5)
        assert row["learning_rate"] == pytest.approx(of_steps[-1]["learning_rate"], rel=1e-6)
        assert abs(row["mlm_loss"] - of_steps[-1]["mlm_loss"]) > 1e-4  # not the logged step's own value


@pytest.mark.parametrize("size", [0, 2, 5])
def test_prefetched_batches_keep_their_own_iterator_state_and_read_no_batch_past_the_last_step(size):
    from train.partitioning import batch_sharding

    class Finite(SyntheticBatches):
        def __next__(self):
            if self.position == 4:
                raise AssertionError("read a fifth batch for four steps")
            return super().__next__()

    sharding = batch_sharding(make_mesh(data=-1, fsdp=1, tensor=1))
    pairs = list(prefetch_to_device(Finite(), sharding, steps=4, size=size))
    reference = SyntheticBatches()
    for k, (batch, state) in enumerate(pairs):
        np.testing.assert_array_equal(np.asarray(batch["input_ids"]), next(reference)["input_ids"])
        assert state == {"position": k + 1}  # a checkpoint of step k resumes with batch k + 1, not a prefetched one


def test_a_finished_run_trains_nothing_and_returns_its_final_metrics(tmp_path, capsys):
    config = tiny_config(steps=3, every_steps=3)
    first_state, first = train_and_evaluate(config, str(tmp_path), SyntheticBatches(), show_progress=False)
    rows = (tmp_path / "metrics.jsonl").read_text()
    capsys.readouterr()
    batches = SyntheticBatches()
    again_state, again = train_and_evaluate(config, str(tmp_path), batches, show_progress=False)
    assert "nothing left to train" in capsys.readouterr().out
    assert again == first and again["loss"] > 0
    chex.assert_trees_all_equal(jax.device_get(again_state.params), jax.device_get(first_state.params))
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # nothing trained, nothing logged
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
    assert batches.position == 0  # not a batch drawn: the model's shapes come from its config


def test_checkpoints_keep_the_last_k_and_the_best_by_the_eval_metric(tmp_path):
    model = zoo.create("bert-tiny", task="mlm")
    tx = make_optimizer(optax.constant_schedule(1e-3))
    state, _ = init_train_state(model, tx, jax.random.key(0), make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    checkpointer = Checkpointer(str(tmp_path), every_steps=1, keep=2, best_metric="eval_loss", best_mode="min")
    for step, eval_loss in zip(range(1, 7), [5.0, 2.0, 3.0, None, 4.0, None]):
        metrics = None if eval_loss is None else {"eval_loss": eval_loss}
        checkpointer.save(step, state, jax.random.key(0), {"position": step}, metrics=metrics, force=True)
        checkpointer.wait()
    checkpointer.close()
    assert sorted(int(s) for s in os.listdir(tmp_path) if s.isdigit()) == [2, 5, 6]


def test_mlm_head_at_masked_positions_only_gives_the_same_loss_and_update():
    model = zoo.create("bert-tiny", task="pretraining", dropout_rate=0.0, attention_dropout_rate=0.0)
    batch = make_batch("mlm")
    batch["next_sentence_labels"] = np.arange(8, dtype=np.int32) % 2
    most = int((batch["mlm_labels"] >= 0).sum(axis=1).max())
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(1e-3)
    tx = make_optimizer(schedule)
    results = []
    for max_predictions in (0, most + 2):
        state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
        step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS["pretraining"],
                                mlm_max_predictions=max_predictions)
        state, metrics = step(state, batch, jax.random.PRNGKey(0))
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    chex.assert_trees_all_close(results[0][1], results[1][1], atol=1e-6)


def test_bfloat16_compute_trains_with_float32_params_and_optimizer_state():
    model = zoo.create("gpt-tiny", task="causal_lm", dtype="bfloat16")
    batch = make_batch("causal_lm")
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(1e-3)
    tx = make_optimizer(schedule)
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS["causal_lm"])
    state, metrics = step(state, batch, jax.random.PRNGKey(0))
    assert np.isfinite(float(metrics["loss"]))
    floats = [x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert set(floats) == {jnp.dtype("float32")}


class ParityBatches(SyntheticBatches):
    """Token rows labelled with whether their first token's id is even; with a key no task reads."""

    def __next__(self):
        batch = super().__next__()
        return {**batch, "parity": (batch["input_ids"][:, 0] % 2 == 0).astype(np.int32),
                "unused": np.full_like(batch["input_ids"], -1)}


def test_a_task_added_to_the_table_is_all_the_step_and_the_losses_need(tmp_path, monkeypatch):
    def parity_loss(outputs, batch, label_smoothing=0.0):
        assert set(batch) == {"input_ids", "attention_mask", "parity"}  # declared keys only: no "unused"
        loss_sum, correct, weight = cross_entropy(outputs.logits, batch["parity"])
        return loss_sum / weight, {"loss_sum": loss_sum, "correct": correct, "weight": weight}

    task = Task("first_token_parity", head="sequence_classification", inputs=("input_ids", "attention_mask"),
                labels=("parity",), loss=parity_loss, data=None)
    monkeypatch.setitem(TASKS, task.name, task)
    config = tiny_config(task=task.name, steps=3, every_steps=3)
    no_dropout = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0}
    config.model_overrides.update({"num_labels": 2, **no_dropout})
    train_and_evaluate(config, str(tmp_path), ParityBatches(task="none"), show_progress=False)

    # The first logged loss is the custom loss of the initial weights on the first batch.
    model = zoo.create("bert-tiny", task="sequence_classification", num_labels=2, **no_dropout)
    params = untrained_params(model, config.seed)
    batch = next(ParityBatches(task="none"))
    outputs = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    expected, _ = parity_loss(outputs, {k: batch[k] for k in ("input_ids", "attention_mask", "parity")})
    first = read_metrics(str(tmp_path))[0]
    assert first["step"] == 1 and first["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert 0.0 <= first["accuracy"] <= 1.0


def test_init_from_run_starts_a_new_task_from_a_runs_body_and_refuses_another_body(tmp_path):
    """Pre-train (MLM) three steps, then a classifier from that run: its body is the run's last checkpoint, the pooler
    and classifier are new; a body of another width is refused with the shapes; an empty folder is named."""
    from train.loop import create_model

    pretraining = str(tmp_path / "mlm")
    state, _ = train_and_evaluate(tiny_config(steps=3, every_steps=3), pretraining, SyntheticBatches(),
                                  show_progress=False)
    config = tiny_config(task="sequence_classification")
    config.init_from_run = pretraining
    model, params = create_model(config)
    assert model.task == "sequence_classification" and {"pooler", "classifier"} <= set(params)
    chex.assert_trees_all_equal(params["encoder"], jax.device_get(state.params["encoder"]))
    chex.assert_trees_all_equal(params["token_embedding"], jax.device_get(state.params["token_embedding"]))
    config.model_overrides.hidden_size = 32
    with pytest.raises(ValueError, match=r"(?s)does not fit the model bert task='sequence_classification' \(\d+ shapes "
                                         r"differ, 0 body parameters missing\).*\n  embeddings/position_embedding/"
                                         r"embedding: the run has \(128, 64\), the model wants \(128, 32\)"):
        create_model(config)
    config.init_from_run = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint directory .*empty/checkpoints"):
        create_model(config)
    config.init_from = str(tmp_path)
    with pytest.raises(ValueError, match="both say where the weights come from"):
        create_model(config)


def test_evaluate_pads_the_last_smaller_batch_and_scores_each_example_once():
    """Batches of 8 and 3 rows: the step sees 8 rows both times (the 5 added are labelled IGNORE and hold zeros),
    and the metric is the mean over the 11 real rows."""
    from train.loop import evaluate, pad_rows
    from train.partitioning import batch_sharding

    labels = np.arange(11, dtype=np.int32) * 3
    batches = [{"input_ids": np.ones((8, 4), np.int32), "labels": labels[:8]},
               {"input_ids": np.ones((3, 4), np.int32), "labels": labels[8:]}]
    padded = pad_rows(batches[1], 8, ("labels",))
    assert padded["labels"].tolist() == [24, 27, 30, -100, -100, -100, -100, -100]
    assert padded["input_ids"][3:].sum() == 0 and padded["input_ids"].dtype == np.int32
    seen_shapes = []

    def eval_step(params, batch):
        seen_shapes.append(batch["labels"].shape)
        real = batch["labels"] >= 0
        return {"loss_sum": jnp.sum(jnp.where(real, batch["labels"], 0)).astype(jnp.float32),
                "weight": jnp.sum(real).astype(jnp.float32)}, {}

    results = evaluate(eval_step, None, batches, batch_sharding(make_mesh()), rows=8, label_keys=("labels",))
    assert seen_shapes == [(8,), (8,)] and results["loss"] == pytest.approx(labels.mean())
    with pytest.raises(ValueError, match="an eval batch of 9 rows is larger than the 8 of a step"):
        pad_rows({"labels": np.zeros(9, np.int32)}, 8, ("labels",))


def test_a_regression_loss_and_stsb_metric_skip_rows_labelled_ignore():
    from train.benchmarks import get_metric
    from train.losses import sequence_classification_loss
    from zoo.models import ModelOutput

    scores = jnp.array([[1.0], [2.0], [4.0], [9.0]])
    labels = jnp.array([1.5, 2.0, 3.0, -100.0])  # the last row pads the batch
    loss, metrics = sequence_classification_loss(ModelOutput(None, logits=scores), {"labels": labels})
    assert float(loss) == pytest.approx((0.25 + 0 + 1) / 3) and float(metrics["weight"]) == 3
    stsb = get_metric("glue/stsb", None)({"predictions": np.array([1.0, 2.0, 4.0, 9.0])},
                                         {"labels": np.array([1.5, 2.0, 3.0, -100.0])})
    assert stsb["pearson"] == pytest.approx(np.corrcoef([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])[0, 1])
