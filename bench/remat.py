"""What each remat policy (`Config.remat`) costs: the planned memory and FLOPs of one compiled train step.

    python bench/remat.py [--models gpt2 bert] [--gpt2-shape 8x1024] [--bert-shape 32x128] [--dtype bfloat16]
                          [--policies none dots dots_no_batch attention full]

Nothing runs: each step is lowered and compiled for this machine's backend, and XLA's own plan is read back
(`compiled.memory_analysis()`: the temporaries the step needs beside its arguments and outputs, which is where the
saved activations live; `compiled.cost_analysis()`: the FLOPs it counts, recomputation included). The figures are
the compiler's for this backend (CPU here, GPU on a GPU machine), so they are deterministic, and a policy's cost
in memory and FLOPs can be read against "none" before choosing one. The model runs in `--dtype` (bfloat16, as the
GPT-2 and BERT recipes train) over float32 parameters, layers unrolled (XLA's FLOPs count a scanned body once).
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

import zoo
from train.optimizer import make_optimizer, make_schedule
from train.partitioning import RULES, make_mesh
from train.step import abstract_train_state, compile_steps
from train.tasks import TASKS
from zoo.config import REMAT_POLICIES

PRESETS = {"gpt2": ("gpt2", "causal_lm"), "bert": ("bert-base-uncased", "mlm")}
MLM_PREDICTIONS = 20  # BERT's masked positions per row at 128 tokens


def abstract_batch(task: str, batch: int, length: int) -> dict:
    shape = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    labels = "mlm_labels" if task == "mlm" else "labels"
    return {"input_ids": shape, "attention_mask": shape, labels: shape}


def planned_step(name: str, task: str, batch: int, length: int, remat: str, dtype: str,
                 logits_chunk: int = 0) -> tuple[int, float]:
    """(temporary bytes, FLOPs) that XLA plans for one train step of `name` under `remat` (with the loss's logits
    made `logits_chunk` positions at a time when > 0)."""
    model = zoo.create(name, task=task, remat=remat, dtype=dtype)  # unrolled: XLA counts a loop body once
    schedule = make_schedule("constant", peak_value=1e-4, warmup_steps=0, total_steps=10)
    tx = make_optimizer(schedule)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    state, shardings = abstract_train_state(model, tx, mesh)
    train_step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS[task],
                                  mlm_max_predictions=MLM_PREDICTIONS if task == "mlm" else 0,
                                  logits_chunk=logits_chunk)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        compiled = train_step.jitted.lower(state, abstract_batch(task, batch, length),
                                           jax.eval_shape(lambda: jax.random.key(0))).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict on older jax
    return compiled.memory_analysis().temp_size_in_bytes, float(cost["flops"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gpt2", "bert"], choices=sorted(PRESETS))
    parser.add_argument("--gpt2-shape", default="8x1024", help="batch x length of the GPT-2 step")
    parser.add_argument("--bert-shape", default="32x128", help="batch x length of the BERT step")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--policies", nargs="+", default=list(REMAT_POLICIES), choices=REMAT_POLICIES)
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}: planned per train step, {args.dtype} compute")
    for kind in args.models:
        name, task = PRESETS[kind]
        batch, length = (int(n) for n in getattr(args, f"{kind}_shape").split("x"))
        print(f"\n{name} ({task}), batch {batch} x {length}")
        first = f"vs {args.policies[0]}"
        print(f"{'remat':<14} {'temp GiB':>9} {first:>8} {'TFLOPs':>8} {first:>8}")
        baseline = None
        for remat in args.policies:
            temp, flops = planned_step(name, task, batch, length, remat, args.dtype)
            baseline = baseline or (temp, flops)
            print(f"{remat:<14} {temp / 2 ** 30:>9.2f} {temp / baseline[0]:>7.2f}x {flops / 1e12:>8.2f} "
                  f"{flops / baseline[1]:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
