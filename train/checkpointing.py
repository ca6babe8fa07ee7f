"""Orbax checkpoints of the whole run: train state, rng and the data iterator's position.

Saves are asynchronous and atomic (a step directory appears only once complete); the last `keep` are kept, and the
best by an eval metric when one is named. A checkpoint that does not fit the model is an error naming the
mismatch, raised before anything is restored or written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as preservation


def _remove_unfinished_saves(directory: str) -> None:
    """Deletes the temporary directories of saves that a killed process left behind, before the manager starts.

    Orbax's own clean-up (`cleanup_tmp_directories`) runs in the background and is awaited only by the manager's next
    save, so a second manager on the same directory (a restore, then the run) would race the first one's clean-up
    over the same files. Deleting them here, synchronously, leaves orbax nothing to race over.
    """
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if ".orbax-checkpoint-tmp" in name:  # how orbax names a step directory until its save commits
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


class Checkpointer:
    def __init__(self, directory: str, *, every_steps: int, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "min", async_save: bool = True):
        if every_steps < 1:
            raise ValueError(f"checkpoint every_steps must be >= 1, got {every_steps}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"checkpoint best_mode must be 'min' or 'max', got {best_mode!r}")
        # The last `keep` checkpoints, and also the best one by `best_metric` however old it is.
        policies = [preservation.LatestN(keep)]
        if best_metric:
            policies.append(preservation.BestN(get_metric_fn=lambda metrics: metrics[best_metric],
                                               reverse=best_mode == "min", n=1,
                                               keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps,
            preservation_policy=preservation.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # a save killed half-way leaves only a temporary directory behind
        )
        self.directory = os.path.abspath(directory)
        _remove_unfinished_saves(self.directory)
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, rng, data_state: dict, metrics: dict | None = None, force: bool = False) -> bool:
        """Starts an async save if `step` is due (or `force`); returns whether it did. `rng` is a typed key
        (`jax.random.key`), saved as its key data: the uint32[2] that a raw key of older checkpoints also was."""
        saved = {"train_state": state, "rng": jax.random.key_data(rng)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(saved),
                                  data=ocp.args.JsonSave(data_state))
        return self.manager.save(step, args=args, metrics=metrics, force=force)

    def restore(self, step: int, abstract_state, abstract_rng) -> tuple[Any, Any, dict]:
        """(state, rng, data_state) of `step`, placed on the shardings that `abstract_state` carries.

        `abstract_state` is a tree of jax.ShapeDtypeStruct with shardings, so a checkpoint written on one mesh
        restores onto another; `abstract_rng` the ShapeDtypeStruct of the run's typed key (`jax.random.key`, of
        JAX's default implementation), which comes back typed. Raises ValueError naming missing, unexpected or
        mis-shaped entries.
        """
        rng_data = jax.eval_shape(jax.random.key_data, abstract_rng)
        target = {"train_state": abstract_state,
                  "rng": jax.ShapeDtypeStruct(rng_data.shape, rng_data.dtype, sharding=abstract_rng.sharding)}
        self._check_fits(step, target)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        rng = jax.random.wrap_key_data(restored.state["rng"])
        return restored.state["train_state"], rng, dict(restored.data)

    def _check_fits(self, step: int, target) -> None:
        saved = self.manager.item_metadata(step).state
        saved_shapes = {_path(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]}
        wanted = {_path(p): tuple(s.shape) for p, s in jax.tree_util.tree_flatten_with_path(target)[0]}
        problems = [f"missing from the checkpoint: {k}" for k in sorted(wanted.keys() - saved_shapes.keys())]
        problems += [f"not in the model: {k}" for k in sorted(saved_shapes.keys() - wanted.keys())]
        problems += [f"{k}: checkpoint has shape {saved_shapes[k]}, model wants {wanted[k]}"
                     for k in sorted(wanted.keys() & saved_shapes.keys()) if saved_shapes[k] != wanted[k]]
        if problems:
            shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
            raise ValueError(f"checkpoint {self.directory} step {step} does not fit the model "
                             f"({len(problems)} mismatches):\n  {shown}\nThat folder holds a run of another model or "
                             f"recipe (kept as it is): train in another workdir, or delete it to start over.")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` on `shardings`: the restore target for a run on this mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


@contextlib.contextmanager
def _opened_at(directory: str, step: int | None = None):
    """(checkpointer, step) of a run's checkpoint directory at `step` (default: its latest), closed on exit.

    Raises FileNotFoundError when the directory holds no checkpoint.
    """
    if not os.path.isdir(directory):  # checked first: the manager would create the directory
        raise FileNotFoundError(f"no checkpoint directory {os.path.abspath(directory)}")
    checkpointer = Checkpointer(directory, every_steps=1)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}")
        yield checkpointer, step
    finally:
        checkpointer.close()


def restore_train_state(directory: str, like, step: int | None = None) -> tuple[int, Any]:
    """(step, train state) saved in a run's checkpoint directory (default: its latest step), placed on the shardings of
    the arrays in `like`: a train state of the same model, e.g. the one training returned or one built on another mesh.

    Raises FileNotFoundError when the directory holds no checkpoint; ValueError when the checkpoint does not fit.
    """
    with _opened_at(directory, step) as (checkpointer, step):
        shardings = jax.tree.map(lambda x: x.sharding, like)
        saved_rng = jax.eval_shape(lambda: jax.random.key(0))  # the loop saves its typed key next to the state
        state, _, _ = checkpointer.restore(step, abstract_like(like, shardings), saved_rng)
    return step, state


def restore_saved_params(directory: str) -> tuple[int, dict]:
    """(step, params) of the latest checkpoint in a run's checkpoint directory, as saved (no target: the arrays on
    this host's default device), whatever model and task wrote them: the start of another run (`init_from_run`).

    Raises FileNotFoundError when the directory holds no checkpoint.
    """
    with _opened_at(directory) as (checkpointer, step):
        restored = checkpointer.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state["train_state"]["params"]
