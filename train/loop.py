"""The training loop: one compiled step fed from a resumable iterator, with checkpoints, eval and progress."""

from __future__ import annotations

import collections
import functools
import math
import os
import time
from typing import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import linen as nn
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

import zoo
from train.checkpointing import Checkpointer, abstract_like, restore_saved_params
from train.losses import IGNORE, add_to_window, summarize
from train.metrics import MetricWriter, plot_loss_curve, read_metrics
from train.optimizer import make_optimizer, make_schedule, parse_lr_multipliers
from train.partitioning import batch_sharding, make_mesh
from train.step import abstract_train_state, compile_steps, init_train_state
from train.benchmarks import get_metric
from train.tasks import get_task
from zoo.checkpoints import HEAD_MODULES, public_format_problem
from zoo.lora import ALSO_TRAINABLE, trainable_mask
from zoo.registry import example_inputs


class NonFiniteLoss(FloatingPointError):
    pass


def create_model(config: ml_collections.ConfigDict):
    """(model, pretrained params or None) of a recipe: `config.model` (a preset), `config.task` and
    `config.model_overrides`; with `config.init_from` the model and its weights come from that checkpoint folder
    (a new task head is initialised); with `config.init_from_run` the weights come from another zoo run
    (`params_from_run`)."""
    overrides, head = dict(config.model_overrides), get_task(config.task).head
    if config.init_from and config.init_from_run:
        raise ValueError(f"init_from={config.init_from!r} and init_from_run={config.init_from_run!r} both say where "
                         f"the weights come from: set one")
    if config.init_from:
        return zoo.from_pretrained(config.init_from, task=head, **overrides)
    model = zoo.create(config.model, task=head, **overrides)
    if config.init_from_run:
        return model, params_from_run(config.init_from_run, model, config.seed)
    return model, None


def params_from_run(workdir: str, model, seed: int) -> dict:
    """`model`'s params starting from the last checkpoint of the zoo run in `workdir` (a pre-training run, say, of
    another task on the same body): every parameter the model shares with that run is copied, the model's head
    modules that the run lacks (a classifier, a pooler) are initialised from `seed`, and the run's parameters this
    model has no place for (its pre-training head) are dropped, named in a log line.

    Raises FileNotFoundError when `workdir` holds no checkpoint; ValueError naming the parameters when a shared one
    has another shape or a body parameter of the model is not in the run (another model config).
    """
    directory = os.path.join(workdir, "checkpoints")
    step, saved = restore_saved_params(directory)
    saved = traverse_util.flatten_dict(saved, sep="/")
    fresh = jax.jit(model.init)(jax.random.key(seed), *example_inputs(model))["params"]
    fresh = traverse_util.flatten_dict(nn.unbox(fresh), sep="/")
    reshaped = [f"{path}: the run has {saved[path].shape}, the model wants {value.shape}"
                for path, value in fresh.items() if path in saved and saved[path].shape != value.shape]
    body = [path for path in fresh if path not in saved and path.split("/")[0] not in HEAD_MODULES]
    if reshaped or body:
        raise ValueError(f"the run in {directory} (step {step}) does not fit the model {model.config.family} "
                         f"task={model.task!r} ({len(reshaped)} shapes differ, {len(body)} body parameters missing): "
                         f"give the model the run's model config (model and model_overrides)."
                         + "".join(f"\n  {line}" for line in reshaped[:10])
                         + (f"\n  body parameters not in the run: {', '.join(body[:10])}" if body else ""))
    dropped = sorted(path for path in saved if path not in fresh)
    if dropped:
        print(f"init_from_run: parameters of {directory} step {step} this task has no place for (dropped): "
              f"{', '.join(dropped)}", flush=True)
    started = [path for path in fresh if path not in saved]
    if started:
        print(f"init_from_run: initialised from seed {seed}: {', '.join(started)}", flush=True)
    return traverse_util.unflatten_dict({path: saved.get(path, value) for path, value in fresh.items()}, sep="/")


def lora_trainable(config: ml_collections.ConfigDict, model) -> Callable | None:
    """params -> what trains, for a model with LoRA adapters (`model_overrides.lora_rank`): the adapters and what
    `optimizer.lora_also_train` adds ("head", "biases"); None for a model without adapters (everything trains)."""
    also = tuple(name.strip() for name in config.optimizer.lora_also_train.split(",") if name.strip())
    if not model.config.lora_rank:
        if also:
            raise ValueError(f"optimizer.lora_also_train={config.optimizer.lora_also_train!r} needs LoRA adapters: "
                             f"set model_overrides.lora_rank")
        return None
    unknown = sorted(set(also) - set(ALSO_TRAINABLE))
    if unknown:
        raise ValueError(f"optimizer.lora_also_train names {unknown}; LoRA can also train {ALSO_TRAINABLE}")
    return functools.partial(trainable_mask, also_train=also)


def make_optimizer_from_config(config: ml_collections.ConfigDict, trainable: Callable | None = None):
    """(schedule, optax transformation) of a recipe's `schedule` and `optimizer` sections; `trainable` (see
    `lora_trainable`) freezes what it does not mark.

    `train.steps` counts micro-batches; with `optimizer.grad_accum_steps` = k the optimizer updates every k of them,
    and the schedule (its warm-up steps too) counts those `train.steps // k` updates.
    """
    opt, sched = config.optimizer, config.schedule
    if config.train.steps % opt.grad_accum_steps:
        raise ValueError(f"train.steps={config.train.steps} is not a multiple of optimizer.grad_accum_steps="
                         f"{opt.grad_accum_steps}: the last update would have a partial batch")
    schedule = make_schedule(sched.name, peak_value=opt.learning_rate, warmup_steps=sched.warmup_steps,
                             total_steps=config.train.steps // opt.grad_accum_steps, end_value=sched.end_value)
    tx = make_optimizer(schedule, name=opt.name, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                        clip_norm=opt.clip_norm, grad_accum_steps=opt.grad_accum_steps, trainable=trainable,
                        lr_multipliers=parse_lr_multipliers(opt.lr_multipliers))
    return schedule, tx


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This host's rows -> one global array per key, split over the data-parallel devices."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def prefetch_to_device(train_data: Iterator, sharding: NamedSharding, steps: int,
                       size: int = 2) -> Iterator[tuple[dict, dict]]:
    """`steps` pairs of (global batch on the devices, `train_data`'s state after it), with `size` more batches
    built and sent ahead (Flax's prefetch_to_device): the transfers are asynchronous, so batch k + size travels
    while the devices run step k, and the state of each batch stays with it for the checkpoint of its step."""
    queue, sent = collections.deque(), 0
    for _ in range(steps):
        while sent < steps and len(queue) <= size:
            queue.append((global_batch(next(train_data), sharding), train_data.get_state()))
            sent += 1
        yield queue.popleft()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, train_data: Iterator,
                       eval_data=None, *, model=None, initial_params=None, show_progress: bool = True,
                       on_metrics: Callable[[dict], None] | None = None) -> dict:
    """Trains `config.train.steps` steps (micro-steps with gradient accumulation), resuming from `workdir`.

    `train_data` yields this host's part of each batch as a dict of NumPy arrays and has `get_state()` and
    `set_state(state)`, saved in every checkpoint so a resumed run sees exactly the batches it would have seen.
    `eval_data()` returns a fresh iterable of eval batches. `on_metrics(row)` is called on process 0 with each row
    written to metrics.jsonl (`step` and the train or `eval_` metrics) as it is written, e.g. to draw a live loss
    curve. A train row holds the means over every step since the previous row, weighted by tokens as the loss is.
    Returns (final state, last train and eval metrics). A workdir whose run already reached `config.train.steps`
    trains nothing: its final state and metrics (from metrics.jsonl) come back, so running a notebook or a command
    twice is harmless.
    Raises NonFiniteLoss (naming the step) on a NaN or inf loss; the last checkpoint kept is a finite one.
    """
    os.makedirs(workdir, exist_ok=True)
    if model is None:
        model, initial_params = create_model(config)
    trainable = lora_trainable(config, model)
    schedule, tx = make_optimizer_from_config(config, trainable)
    mesh = make_mesh(**config.mesh)
    data_sharding = batch_sharding(mesh)
    # Made by a jitted function on every process: device_put cannot place a typed key on other hosts' devices.
    rng = jax.jit(lambda: jax.random.key(config.seed + 1), out_shardings=NamedSharding(mesh, PartitionSpec()))()
    ckpt_cfg = config.checkpoint
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=ckpt_cfg.every_steps,
                                keep=ckpt_cfg.keep, best_metric=ckpt_cfg.best_metric or None,
                                best_mode=ckpt_cfg.best_mode)
    total, log_every = config.train.steps, config.train.log_every
    start = checkpointer.latest_step()
    if start is None:
        state, shardings = init_train_state(model, tx, jax.random.key(config.seed), mesh, params=initial_params)
        start = 0
    else:
        abstract_state, shardings = abstract_train_state(model, tx, mesh)
        state, rng, data_state = checkpointer.restore(start, abstract_state, abstract_like(rng, rng.sharding))
        if start >= total:
            checkpointer.close()
            print(f"nothing left to train: {checkpointer.directory} already holds step {start} of "
                  f"train.steps={total}; returning that run's final state and metrics", flush=True)
            return state, final_metrics(workdir, start)
        train_data.set_state(data_state)
        print(f"resumed from {checkpointer.directory} at step {start}", flush=True)

    metric = get_metric(config.eval.metric, config) if config.eval.metric else None  # checked before the first step
    train_step, eval_step = compile_steps(model, tx, schedule, shardings, mesh, task=get_task(config.task),
                                          eval_outputs=metric is not None,
                                          label_smoothing=config.loss.label_smoothing,
                                          mlm_max_predictions=config.loss.mlm_max_predictions,
                                          logits_chunk=config.loss.logits_chunk,
                                          grad_accum_steps=config.optimizer.grad_accum_steps, trainable=trainable)
    writer = MetricWriter(workdir, on_write=on_metrics)
    eval_every = config.train.eval_every
    last_train, last_eval = {}, {}
    window, window_steps = None, 0  # the train metrics summed on the device since the last log
    data_state = train_data.get_state()
    batches = prefetch_to_device(train_data, data_sharding, total - start, config.data.device_prefetch)
    bar = tqdm.tqdm(total=total, initial=start, disable=not show_progress or jax.process_index() != 0,
                    dynamic_ncols=True, desc="train")
    tokens, clock = 0, time.perf_counter()
    try:
        for step in range(start, total):
            batch, data_state = next(batches)  # data_state: the position after this batch, where a resume continues
            state, metrics = train_step(state, batch, rng)
            window, window_steps = add_to_window(window, metrics), window_steps + 1
            tokens += batch["input_ids"].size  # the global batch's, every host's rows
            done = step + 1
            log_now = done % log_every == 0 or done == total
            save_now = done % ckpt_cfg.every_steps == 0 or done == total
            if log_now or save_now:  # the only host sync: every step since the last one is checked before a save
                window_means = summarize(jax.device_get(window), window_steps)
                if not math.isfinite(window_means["loss"]):
                    raise NonFiniteLoss(f"loss is {window_means['loss']} at step {done}; stopping (a step after "
                                        f"{done - window_steps} went non-finite). The last good checkpoint is step "
                                        f"{checkpointer.latest_step()} in {checkpointer.directory}")
            if log_now:
                last_train = window_means
                elapsed = time.perf_counter() - clock
                last_train["tokens_per_second"] = tokens / max(elapsed, 1e-9)
                tokens, clock = 0, time.perf_counter()
                window, window_steps = None, 0
                writer.write(done, last_train)
                bar.set_postfix(loss=f"{last_train['loss']:.3f}", lr=f"{last_train['learning_rate']:.2e}",
                                tok_s=f"{last_train['tokens_per_second']:.0f}")
            evaluated = eval_data is not None and eval_every and (done % eval_every == 0 or done == total)
            if evaluated:
                last_eval = evaluate(eval_step, state.params, eval_data(), data_sharding, metric=metric,
                                     rows=config.train.batch_size // jax.process_count(),
                                     label_keys=get_task(config.task).labels)
                writer.write(done, last_eval, prefix="eval_")
            if save_now:  # a checkpoint carries the eval metrics of its own step, if any (for keeping the best)
                metrics = {f"eval_{k}": v for k, v in last_eval.items()} if evaluated else None
                checkpointer.save(done, state, rng, data_state, metrics=metrics, force=True)
            bar.update(1)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
    plot_loss_curve(workdir)
    return state, {**last_train, **{f"eval_{k}": v for k, v in last_eval.items()}}


def export_model(model, params, tokenizer, folder: str) -> str | None:
    """Writes the trained model in its family's public format (config.json + safetensors, as `transformers` and
    `zoo.from_pretrained` read them, so a recipe's `init_from` can start from it) with its tokenizer's files; a model
    with LoRA adapters is written with them merged into its base weights (`zoo.merge_lora`). Returns None, or why the
    model has no public format (then nothing is written). One process only: the params must be addressable here."""
    model, params = zoo.merge_lora(model, jax.device_get(params))
    problem = public_format_problem(model)
    if problem is None:
        zoo.save_pretrained(model, params, folder)
        tokenizer.save(folder)
    return problem


def export_adapter(model, params, folder: str) -> str | None:
    """Writes the LoRA adapters of a model that has them in peft's layout (`zoo.save_adapter`: adapter_config.json +
    adapter_model.safetensors). Returns None, or why not (no adapters, or ones peft cannot express)."""
    if not model.config.lora_rank:
        return "the model has no LoRA adapters"
    try:
        zoo.save_adapter(model, jax.device_get(params), folder)
    except ValueError as error:  # checked before anything is written: names what peft's layout lacks
        return str(error)
    return None


def final_metrics(workdir: str, step: int) -> dict:
    """The last train row and the last eval row (its keys `eval_`-prefixed) that metrics.jsonl holds up to `step`:
    what `train_and_evaluate` returned when that run finished."""
    last_train, last_eval = {}, {}
    for row in read_metrics(workdir):
        if row["step"] > step:  # written by a run that went further, then was restored to an earlier checkpoint
            continue
        values = {k: v for k, v in row.items() if k != "step"}
        if any(k.startswith("eval_") for k in values):
            last_eval = values
        else:
            last_train = values
    return {**last_train, **last_eval}


def pad_rows(batch: dict, rows: int, label_keys: Sequence[str]) -> dict:
    """`batch` with rows appended up to `rows`: labels IGNORE (-100), which every loss and benchmark metric skips,
    every other key 0 (no attention, no token, no context: SQuAD's metric drops such windows). The eval step is
    compiled for one shape; the last batch of an eval pass is smaller."""
    missing = rows - len(next(iter(batch.values())))
    if missing == 0:
        return batch
    if missing < 0:
        raise ValueError(f"an eval batch of {rows - missing} rows is larger than the {rows} of a step")
    return {key: np.concatenate([value, np.full((missing, *value.shape[1:]), IGNORE if key in label_keys else 0,
                                                value.dtype)]) for key, value in batch.items()}


def batches_in_lockstep(batches: Iterable[dict]) -> Iterator[dict]:
    """The host's eval batches and, on several hosts, empty ones after its last while another host still has one
    (`pad_rows` fills them with rows the losses skip): every eval step is a collective all hosts must enter, and the
    hosts' shares of the held-out data need not make the same number of batches. One flag per host and step is
    gathered to know. Raises ValueError on every host when some host has no eval batch at all (no shapes to pad)."""
    if jax.process_count() == 1:
        yield from batches
        return
    iterator, last = iter(batches), None
    while True:
        local = next(iterator, None)
        has_batch = np.asarray(multihost_utils.process_allgather(np.array(local is not None)))  # [hosts]
        if not has_batch.any():
            return
        if last is None and not has_batch.all():
            raise ValueError(f"host(s) {np.flatnonzero(~has_batch).tolist()} of {jax.process_count()} have no eval "
                             f"batch: their share of the eval data is empty (fewer held-out documents or records "
                             f"than hosts?)")
        last = local if local is not None else {key: value[:0] for key, value in last.items()}
        yield last


def evaluate(eval_step, params, batches, sharding, metric: Callable[[dict, dict], dict] | None = None, *,
             rows: int, label_keys: Sequence[str]) -> dict:
    """Metrics summed over every eval batch, then divided (so they weight by real tokens, not by batch), and the
    benchmark `metric` (train.benchmarks) of the per-example outputs gathered from every batch and every host. A
    batch of fewer than `rows` rows (the pass's last) is padded with rows the losses and metrics skip (`pad_rows`),
    so every example counts once and the step keeps its shape."""
    totals, gathered = None, []
    for local in batches_in_lockstep(batches):
        metrics, per_example = eval_step(params, global_batch(pad_rows(local, rows, label_keys), sharding))
        totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
        if metric is not None:  # each host gets the global rows: the metric is not a sum, it needs them all
            gathered.append(multihost_utils.process_allgather(per_example, tiled=True))
    if totals is None:
        return {}
    results = summarize(jax.device_get(totals))
    if metric is not None:
        if not gathered[0]:
            raise ValueError("eval.metric is set but the task's eval step returns no predictions (the task has neither "
                             "Task.predictions nor Task.generated_predictions)")
        rows = jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *gathered)
        results.update(metric(rows["outputs"], rows["batch"]))
    return results
