"""Learning-rate schedules and the optimizer chains of the BERT, ALBERT, GPT-2, Transformer and T5 recipes, from
optax."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from zoo.lora import param_names

SCHEDULES = ("linear", "rsqrt", "constant_rsqrt", "cosine", "constant")
OPTIMIZERS = ("adamw", "lamb", "adafactor")


def make_schedule(name: str, *, peak_value: float, warmup_steps: int, total_steps: int,
                  end_value: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_value`, then the named decay.

    linear: to `end_value` at `total_steps` (BERT). rsqrt: peak * sqrt(warmup / step) after the warm-up (Vaswani et al.;
    with peak = d^-0.5 * warmup^-0.5 this is their lr = d^-0.5 * min(step^-0.5, step * warmup^-1.5)).
    constant_rsqrt: T5's peak * sqrt(warmup / max(step, warmup)), held at the peak (not ramped) for the warm-up steps
    (with peak 0.01 and 10^4 steps, their 1 / sqrt(max(step, 10^4))). cosine: half a cosine to `end_value` at
    `total_steps`. constant: stays at the peak.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not one of {SCHEDULES}")
    if warmup_steps < 0 or total_steps < 1 or (name in ("linear", "cosine") and warmup_steps >= total_steps):
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
                         f"total_steps={total_steps}")
    if name == "constant_rsqrt":
        return lambda step: peak_value * jnp.sqrt(max(warmup_steps, 1) / jnp.maximum(
            jnp.asarray(step, jnp.float32), max(warmup_steps, 1)))
    # Not optax.linear_schedule: it computes peak - peak * (1 - step / warmup), which loses digits in float32.
    warmup = lambda step: peak_value * jnp.asarray(step, jnp.float32) / max(warmup_steps, 1)
    if name == "linear":
        decay = optax.linear_schedule(peak_value, end_value, total_steps - warmup_steps)
    elif name == "cosine":
        decay = optax.cosine_decay_schedule(peak_value, total_steps - warmup_steps, alpha=end_value / peak_value)
    elif name == "rsqrt":
        decay = lambda step: peak_value * jnp.sqrt(max(warmup_steps, 1) / jnp.maximum(step + warmup_steps, 1))
    else:
        decay = optax.constant_schedule(peak_value)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def weight_decay_mask(params):
    """True where weight decay applies: not LayerNorm scales and not biases (BERT's recipe)."""
    def decays(path, _):
        return getattr(path[-1], "key", None) not in ("bias", "scale")
    return jax.tree_util.tree_map_with_path(decays, params)


def parse_lr_multipliers(spec: str) -> dict[str, float]:
    """"name=multiplier,name=multiplier" (a recipe's `optimizer.lr_multipliers`) -> {name: multiplier}; "" -> {}.

    Raises ValueError naming the entry that is not `name=number` with a positive number.
    """
    multipliers = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, value = entry.partition("=")
        try:
            multiplier = float(value)
        except ValueError:
            multiplier = float("nan")
        if not name.strip() or not multiplier > 0:
            raise ValueError(f"optimizer.lr_multipliers entry {entry!r} is not name=multiplier with a positive "
                             f"multiplier (e.g. 'relative_position_bias=30')")
        multipliers[name.strip()] = multiplier
    return multipliers


def scale_by_name(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiplies the update of each parameter whose path ('encoder/relative_position_bias/embedding') has a
    component named in `multipliers` by that multiplier: after AdamW, a learning rate (and decoupled weight decay)
    that many times the schedule's for those parameters. Raises ValueError at init when a name matches no parameter
    (a misspelt name would otherwise change nothing, silently)."""
    def multiplier(path) -> float:
        names = set(param_names(path))
        found = [m for name, m in multipliers.items() if name in names]
        return found[0] if found else 1.0

    def init(params):
        names = {name for path, _ in jax.tree_util.tree_flatten_with_path(params)[0] for name in param_names(path)}
        missing = sorted(set(multipliers) - names)
        if missing:
            raise ValueError(f"optimizer.lr_multipliers names {missing}, which no trained parameter's path contains "
                             f"(a frozen one, such as every weight but the adapters under LoRA, takes no learning "
                             f"rate)")
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(lambda path, u: u * multiplier(path), updates), state

    return optax.GradientTransformation(init, update)


def make_optimizer(schedule: optax.Schedule, *, name: str = "adamw", b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-6, weight_decay: float = 0.01, clip_norm: float | None = 1.0,
                   grad_accum_steps: int = 1, trainable=None,
                   lr_multipliers: Mapping[str, float] | None = None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW, LAMB or Adafactor with decoupled weight decay masked off norms and biases.

    adafactor is T5's (Shazeer & Stern 2018, optax's defaults): factored second moments decaying as step^-0.8, no
    momentum, updates clipped to RMS 1 and scaled by each parameter's RMS; Adam's b1, b2 and eps do not apply to it.
    `lr_multipliers` ({parameter name: multiplier}, see `scale_by_name`) gives the parameters under those names a
    learning rate that many times the schedule's. `grad_accum_steps` > 1 averages that many micro-batches' gradients
    before one update (optax.MultiSteps). `trainable` (params -> a tree of bools, e.g. `zoo.lora.trainable_mask`)
    freezes the others: they get no update and no optimizer state.
    """
    if name == "adamw":
        tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask)
    elif name == "lamb":
        tx = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask)
    elif name == "adafactor":
        tx = optax.adafactor(schedule, weight_decay_rate=weight_decay or None, weight_decay_mask=weight_decay_mask)
    else:
        raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")
    if lr_multipliers:
        tx = optax.chain(tx, scale_by_name(lr_multipliers))
    if clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    if grad_accum_steps > 1:  # inside the trainable mask: frozen parameters get no gradient accumulator either
        tx = optax.MultiSteps(tx, grad_accum_steps)
    if trainable is not None:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   lambda params: jax.tree.map(lambda t: "train" if t else "frozen", trainable(params)))
    return tx
