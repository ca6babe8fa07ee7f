"""Train-step speed of zoo against `transformers` PyTorch on the same CPU, in the same run.

    python bench/train_step.py [--models bert gpt2] [--batch 8] [--length 128] [--steps 5]
                               [--dtype bfloat16] [--attention-kernel cudnn] [--no-torch] [--no-unrolled]

Prints tokens/s of each, their ratio, model-FLOPs utilisation against a measured matmul peak, and the compile time
of the zoo step with and without scan over layers. Needs the test extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from train.optimizer import make_optimizer, make_schedule
from train.partitioning import make_mesh
from train.step import compile_steps, init_train_state
from train.tasks import TASKS

PRESETS = {"bert": ("bert-base-uncased", "mlm"), "gpt2": ("gpt2", "causal_lm")}
MLM_PREDICTIONS = 20


def make_batch(task, batch, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length)).astype(np.int32)
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if task == "mlm":  # BERT's recipe at 128 tokens: 20 masked positions per row
        chosen = np.argsort(rng.random(ids.shape), axis=1)[:, :MLM_PREDICTIONS]
        labels = np.full_like(ids, -100)
        np.put_along_axis(labels, chosen, np.take_along_axis(ids, chosen, axis=1), axis=1)
        out["mlm_labels"] = labels
    return out


def matmul_peak_flops(n=2048, repeats=5) -> float:
    """FLOP/s of a large float32 matmul: the machine's practical peak for MFU."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def zoo_step(kind, batch, steps, scan_layers, mlm_max_predictions=0, **overrides):
    name, task = PRESETS[kind]
    model = zoo.create(name, task=task, scan_layers=scan_layers, **overrides)
    schedule = make_schedule("constant", peak_value=1e-4, warmup_steps=0, total_steps=10)
    tx = make_optimizer(schedule)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    state, shardings = init_train_state(model, tx, jax.random.key(0), mesh)
    train_step, _ = compile_steps(model, tx, schedule, shardings, mesh, task=TASKS[task],
                                  mlm_max_predictions=mlm_max_predictions)
    device_batch = jax.device_put(batch)
    rng = jax.random.PRNGKey(0)
    start = time.perf_counter()
    state, metrics = train_step(state, device_batch, rng)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, device_batch, rng)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps, compile_seconds, zoo.param_count(model)


def torch_step(kind, batch, steps):
    import torch
    import transformers

    name, task = PRESETS[kind]
    torch.manual_seed(0)
    if kind == "bert":
        model = transformers.BertForMaskedLM(transformers.BertConfig())
        labels = torch.tensor(batch["mlm_labels"], dtype=torch.long)
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        labels = torch.tensor(batch["input_ids"], dtype=torch.long)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.tensor(batch["attention_mask"], dtype=torch.long)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bert", "gpt2"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="compute dtype of the zoo model")
    parser.add_argument("--attention-kernel", default="xla", choices=("xla", "cudnn"))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-unrolled", action="store_true", help="skip the compile without scan over layers")
    args = parser.parse_args()
    overrides = dict(dtype=args.dtype, attention_kernel=args.attention_kernel)
    if args.attention_kernel == "cudnn":
        overrides["attention_dropout_rate"] = 0.0  # cuDNN's kernel through jax.nn has no attention dropout
    import torch

    torch.set_num_threads(os.cpu_count())  # the same cores XLA uses
    peak = matmul_peak_flops()
    print(f"{jax.devices()[0].device_kind}: float32 matmul peak {peak / 1e9:.1f} GFLOP/s; batch {args.batch} x "
          f"{args.length} tokens; zoo in {args.dtype}, attention kernel {args.attention_kernel}")
    print(f"{'model':<6} {'zoo tok/s':>10} {'torch tok/s':>12} {'ratio':>7} {'zoo MFU':>8} "
          f"{'compile scan':>13} {'compile unrolled':>17}")
    for kind in args.models:
        name, task = PRESETS[kind]
        cfg = zoo.get_config(name)
        batch = make_batch(task, args.batch, args.length, cfg.vocab_size)
        tokens = args.batch * args.length
        # BERT as its authors trained it: the MLM head only at the 20 masked positions (transformers runs it at all).
        gather = MLM_PREDICTIONS if task == "mlm" else 0
        seconds, compile_scan, params = zoo_step(kind, batch, args.steps, scan_layers=True, mlm_max_predictions=gather,
                                                 **overrides)
        compile_unrolled = None if args.no_unrolled else zoo_step(
            kind, batch, 1, scan_layers=False, mlm_max_predictions=gather, **overrides)[1]
        torch_seconds = None if args.no_torch else torch_step(kind, batch, args.steps)
        # 6 FLOPs per parameter per token (forward + backward) plus attention's 12 * layers * length * hidden.
        flops = tokens * (6 * params + 12 * cfg.num_layers * args.length * cfg.hidden_size)
        torch_rate = f"{tokens / torch_seconds:>12.0f}" if torch_seconds else f"{'-':>12}"
        ratio = f"{torch_seconds / seconds:>6.2f}x" if torch_seconds else f"{'-':>7}"
        print(f"{kind:<6} {tokens / seconds:>10.0f} {torch_rate} {ratio} {flops / seconds / peak:>8.1%} "
              f"{compile_scan:>12.1f}s {'-' if compile_unrolled is None else f'{compile_unrolled:.1f}s':>17}", flush=True)


if __name__ == "__main__":
    main()
