"""The train state, its sharded initialisation, and the pure train and eval steps."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train.losses import with_mlm_positions
from train.partitioning import RULES, batch_sharding, logical_shardings
from train.tasks import Task, loss_inputs, model_inputs
from zoo.registry import example_inputs


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # micro-steps taken (with gradient accumulation, updates are step // grad_accum_steps)
    params: Any
    opt_state: Any


def _state_init(model: nn.Module, tx: optax.GradientTransformation):
    def init(key):  # the parameters' shapes do not depend on the inputs' length or values
        params = model.init(key, *example_inputs(model))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                         rules=RULES) -> tuple[TrainState, Any]:
    """(the state as ShapeDtypeStructs placed on their shardings, those shardings), computing nothing: the target a
    checkpoint restores onto."""
    boxed = jax.eval_shape(_state_init(model, tx), jax.random.key(0))
    shardings = logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            nn.unbox(boxed), shardings)
    return abstract, shardings


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, mesh: Mesh, rules=RULES,
                     params: Any = None) -> tuple[TrainState, Any]:
    """The initial state, created directly in its sharding (no host ever holds it whole), and that sharding.

    With `params` (pretrained weights, for fine-tuning) the state starts from them and no random init is computed.
    """
    _, shardings = abstract_train_state(model, tx, mesh, rules)
    if params is not None:
        params = jax.device_put(params, shardings.params)
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
        return TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step), params=params,
                          opt_state=opt_state), shardings
    init = _state_init(model, tx)
    # Traced outside the mesh, so init's activation constraints are no-ops: out_shardings alone place the state.
    state = jax.jit(lambda k: nn.unbox(init(k)), out_shardings=shardings)(key)
    return state, shardings


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: Callable, *, task: Task,
                    label_smoothing: float = 0.0, grad_accum_steps: int = 1, mlm_max_predictions: int = 0,
                    logits_chunk: int = 0, trainable: Callable | None = None):
    """train_step(state, batch, rng) -> (state, metrics): pure, no host syncs; dropout keyed by fold_in(rng, step).

    The model gets the batch keys `task.inputs` names, the loss those and `task.labels`. `mlm_max_predictions` > 0
    runs a masked-LM head at that many masked positions per row instead of every position; `logits_chunk` > 0 makes
    an LM head's logits and their gradient that many positions of every row at a time (train.losses.
    chunked_cross_entropy), for a vocabulary whose [tokens, vocab] logits would not fit. `trainable` (params -> a
    tree of bools, as the optimizer got it) stops the gradient at the frozen parameters, so none is computed for them.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)
        if mlm_max_predictions and task.masked_lm:
            batch = with_mlm_positions(batch, mlm_max_predictions)

        def loss_fn(params):
            if trainable is not None:
                params = jax.tree.map(lambda p, train: p if train else jax.lax.stop_gradient(p), params,
                                      trainable(params))
            chunked = {"logits_chunk": logits_chunk} if logits_chunk else {}  # heads without one refuse the flag
            outputs = model.apply({"params": params}, **model_inputs(task, batch), deterministic=False,
                                  rngs={"dropout": dropout_rng}, **chunked)
            return task.loss(outputs, loss_inputs(task, batch), label_smoothing)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": schedule(state.step // grad_accum_steps)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: nn.Module, task: Task, *, eval_outputs: bool = False):
    """eval_step(params, batch) -> (metric sums (see train.losses), per-example outputs), dropout off.

    The per-example outputs are what a benchmark metric scores on the host (train.benchmarks): the task's
    `predictions` of the model's outputs, or its `generated_predictions` of the params and the batch (greedy
    decoding), as "outputs", and its label and eval keys ("batch"), batch axis first; empty unless `eval_outputs`
    (a metric is set) and the task has either.
    """

    def eval_step(params, batch: dict):
        outputs = model.apply({"params": params}, **model_inputs(task, batch))
        loss, metrics = task.loss(outputs, loss_inputs(task, batch))
        predicted = None  # only a benchmark metric needs predictions on the host
        if eval_outputs and task.predictions is not None:
            predicted = task.predictions(outputs)
        elif eval_outputs and task.generated_predictions is not None:
            predicted = task.generated_predictions(model, params, batch)
        if predicted is None:
            return metrics, {}
        return metrics, {"outputs": predicted, "batch": {k: batch[k] for k in (*task.labels, *task.eval_keys)}}

    return eval_step


def compile_steps(model, tx, schedule, shardings, mesh: Mesh, rules=RULES, *, task: Task, eval_outputs: bool = False,
                  **step_kwargs):
    """The train step jitted with explicit shardings and the state donated, and the eval step beside it.

    Tracing happens under the mesh and the rules so the models' activation constraints resolve.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    data = batch_sharding(mesh, rules)
    train_step = jax.jit(make_train_step(model, tx, schedule, task=task, **step_kwargs),
                         in_shardings=(shardings, data, replicated), out_shardings=(shardings, replicated),
                         donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, task, eval_outputs=eval_outputs), in_shardings=(shardings.params, data),
                        out_shardings=(replicated, data))  # per-example outputs keep the batch's sharding

    def under_mesh(fn):
        def call(*args):
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                return fn(*args)
        call.jitted = fn
        return call

    return under_mesh(train_step), under_mesh(eval_step)
