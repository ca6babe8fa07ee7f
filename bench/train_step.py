"""Train-step speed of zoo against `transformers` PyTorch on the same device, in the same run.

    python bench/train_step.py [--models bert gpt2] [--batch 8] [--length 128] [--steps 5]
                               [--dtype bfloat16] [--attention-kernel cudnn] [--peak-tflops T]
                               [--torch-compile] [--no-torch] [--no-unrolled]
                               [--sweep [--sweep-min 1] [--sweep-max 256]] [--profile DIR] [--tiny]
                               [--retain-freed-memory]

Prints tokens/s of each, their ratio, the model FLOPs per token as PaLM's appendix B counts them, model-FLOPs
utilisation against the device's peak (the dense bf16 peak from bench/mfu.py's table when the step computes in bf16
on an accelerator, else a measured matmul peak in the compute dtype; `--peak-tflops` overrides either), and the
compile time of the zoo step with and without scan over layers. The PyTorch peer (on CUDA when JAX runs on a GPU)
uses SDPA attention and, when zoo computes in bfloat16, bf16 autocast; `--torch-compile` adds a `torch.compile`d
column. `--sweep`, instead of the table, doubles the batch from --sweep-min until the device runs out of memory or
--sweep-max and names the fastest; `--profile DIR` writes a `jax.profiler` trace of a few compiled zoo steps
(TensorBoard's profile plugin or Perfetto read it). `--tiny` runs a 2-layer, 64-wide model of each family, to check
the script works in seconds. Needs the test extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import zoo
from bench.mfu import bf16_peak_flops, matmul_param_count, train_flops_per_token
from train.malloc import retain_freed_memory
from train.optimizer import make_optimizer, make_schedule
from train.partitioning import make_mesh
from train.step import compile_steps, init_train_state
from train.tasks import TASKS
from zoo.registry import example_inputs

PRESETS = {"bert": ("bert-base-uncased", "mlm"), "gpt2": ("gpt2", "causal_lm")}
TINY = dict(num_layers=2, hidden_size=64, num_heads=2, intermediate_size=128, vocab_size=2048)
MLM_PREDICTIONS = 20
PROFILED_STEPS = 3


def make_batch(task, batch, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab // 2), vocab, (batch, length)).astype(np.int32)
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if task == "mlm":  # BERT's recipe at 128 tokens: 20 masked positions per row
        chosen = np.argsort(rng.random(ids.shape), axis=1)[:, :MLM_PREDICTIONS]
        labels = np.full_like(ids, -100)
        np.put_along_axis(labels, chosen, np.take_along_axis(ids, chosen, axis=1), axis=1)
        out["mlm_labels"] = labels
    return out


def matmul_peak_flops(dtype="float32", n=2048, repeats=5) -> float:
    """FLOP/s of a large matmul in `dtype`: the machine's practical peak for MFU where no data-sheet peak applies."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def device_peak(dtype: str, peak_tflops: float | None) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from). Raises ValueError for a bf16 step on an accelerator kind not in the table."""
    device = jax.devices()[0]
    if peak_tflops is not None:
        return peak_tflops * 1e12, f"--peak-tflops {peak_tflops:g}"
    if device.platform != "cpu" and jnp.dtype(dtype) == jnp.bfloat16:
        return bf16_peak_flops(device.device_kind), f"dense bf16 peak of {device.device_kind} (bench/mfu.py)"
    # A CPU has no bf16 matrix unit to quote, and an accelerator in another dtype no peak in our table: measure.
    return matmul_peak_flops(dtype), f"measured {dtype} matmul peak"


def model_flops_per_token(model, cfg, task, length, mlm_predictions) -> int:
    """PaLM's 6N + 12·L·H·Q·T. With the MLM head at `mlm_predictions` positions only, its matmuls (the dense
    transform and the tied decoder) run for that fraction of the tokens, and N counts them for that fraction."""
    params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))["params"])
    matmul_params = matmul_param_count(params, tied_token_embedding=cfg.tie_word_embeddings)
    if task == "mlm" and mlm_predictions:
        head = params["mlm_head"]["dense"]["kernel"].size + params["token_embedding"]["embedding"].size
        matmul_params -= round(head * (1 - mlm_predictions / length))
    return train_flops_per_token(matmul_params, cfg.num_layers, cfg.num_heads, cfg.head_dim, length)


def is_out_of_memory(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error)


def zoo_step(kind, batch, steps, scan_layers, mlm_max_predictions=0, profile_dir=None, **overrides):
    """(seconds per step, seconds of the first call (compile + one step), model FLOPs per token)."""
    name, task = PRESETS[kind]
    model = zoo.create(name, task=task, scan_layers=scan_layers, **overrides)
    length = batch["input_ids"].shape[1]
    flops_per_token = model_flops_per_token(model, model.config, task, length, mlm_max_predictions)
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
    seconds = (time.perf_counter() - start) / steps
    if profile_dir is not None:  # after the compile and the timed steps, so the trace holds only steady steps
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            for _ in range(PROFILED_STEPS):
                state, metrics = train_step(state, device_batch, rng)
            jax.block_until_ready(metrics)
    return seconds, compile_seconds, flops_per_token


def torch_model(kind, cfg):
    """transformers' model of the zoo config's shape, with SDPA attention."""
    import transformers

    if kind == "bert":
        config = transformers.BertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_length, type_vocab_size=cfg.type_vocab_size)
        return transformers.AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa")
    config = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.hidden_size, n_layer=cfg.num_layers,
                                     n_head=cfg.num_heads, n_inner=cfg.intermediate_size, n_positions=cfg.max_length,
                                     bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def torch_step(kind, cfg, batch, steps, device, bf16, compiled):
    """Seconds per AdamW + clip step of transformers' model, on `device` ("cpu" or "cuda"), under bf16 autocast if
    `bf16`, `torch.compile`d if `compiled`."""
    import torch

    torch.manual_seed(0)
    model = torch_model(kind, cfg).to(device)
    model.train()
    labels = batch["mlm_labels"] if kind == "bert" else batch["input_ids"]
    labels = torch.tensor(labels, dtype=torch.long, device=device)
    ids = torch.tensor(batch["input_ids"], dtype=torch.long, device=device)
    mask = torch.tensor(batch["attention_mask"], dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    forward = torch.compile(model) if compiled else model
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2 if compiled else 1):  # torch.compile may compile again on the second call
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - start) / steps


def torch_device() -> str:
    """The torch device beside JAX's: CUDA when JAX runs on a GPU (an error if torch cannot see it), else the CPU."""
    import torch

    if jax.devices()[0].platform != "gpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"JAX runs on {jax.devices()[0].device_kind} but torch {torch.__version__} sees no CUDA "
                           "device: install a CUDA build of torch, or pass --no-torch")
    return "cuda"


def sweep(kind, cfg, args, overrides, peak):
    """Tokens/s and MFU of the zoo step at batch sweep_min, 2 sweep_min, ... until out of memory or sweep_max."""
    name, task = PRESETS[kind]
    gather = MLM_PREDICTIONS if task == "mlm" else 0
    print(f"{kind} batch sweep ({args.length} tokens a row):")
    print(f"  {'batch':>6} {'zoo tok/s':>10} {'zoo MFU':>8}")
    best = None
    size = args.sweep_min
    while size <= args.sweep_max:
        batch = make_batch(task, size, args.length, cfg.vocab_size)
        try:
            seconds, _, flops_per_token = zoo_step(kind, batch, args.steps, scan_layers=True,
                                                   mlm_max_predictions=gather, **overrides)
        except jax.errors.JaxRuntimeError as error:
            if not is_out_of_memory(error):
                raise
            print(f"  {size:>6} out of device memory: {str(error).splitlines()[0][:100]}")
            break
        finally:
            gc.collect()  # the failed or finished step's buffers go before the next batch allocates
        rate = size * args.length / seconds
        print(f"  {size:>6} {rate:>10.0f} {rate * flops_per_token / peak:>8.1%}", flush=True)
        if best is None or rate > best[1]:
            best = (size, rate)
        size *= 2
    if best is not None:
        print(f"  best batch for {kind} on {jax.devices()[0].device_kind}: {best[0]} ({best[1]:.0f} tokens/s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bert", "gpt2"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="compute dtype of the zoo model (and torch's autocast)")
    parser.add_argument("--attention-kernel", default="xla", choices=("xla", "cudnn"))
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, instead of the table/measure")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-compile", action="store_true", help="also time the torch.compile'd peer")
    parser.add_argument("--no-unrolled", action="store_true", help="skip the compile without scan over layers")
    parser.add_argument("--sweep", action="store_true", help="a batch sweep of the zoo step instead of the table")
    parser.add_argument("--sweep-min", type=int, default=1)
    parser.add_argument("--sweep-max", type=int, default=256)
    parser.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of a few zoo steps here")
    parser.add_argument("--tiny", action="store_true", help="2-layer, 64-wide models: checks that the script runs")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc keeps freed memory (train/malloc.py, a recipe's train.retain_freed_memory; the "
                             "PyTorch peer shares the setting)")
    args = parser.parse_args()
    if args.retain_freed_memory:
        retain_freed_memory()  # before JAX's first computation starts its threads
    overrides = dict(dtype=args.dtype, attention_kernel=args.attention_kernel, **(TINY if args.tiny else {}))
    if args.attention_kernel == "cudnn":
        overrides["attention_dropout_rate"] = 0.0  # cuDNN's kernel through jax.nn has no attention dropout
    bf16 = jnp.dtype(args.dtype) == jnp.bfloat16
    peak, peak_source = device_peak(args.dtype, args.peak_tflops)
    if not args.no_torch:
        import torch

        device = torch_device()
        torch.set_num_threads(os.cpu_count())  # the same cores XLA uses
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {jax.devices()[0].device_kind} "
          f"(jax {jax.__version__}): MFU against {peak / 1e12:.3g} TFLOP/s, the {peak_source}; batch {args.batch} x "
          f"{args.length} tokens; zoo in {args.dtype}, attention kernel {args.attention_kernel}"
          + ("" if args.no_torch else f"; torch {torch.__version__} on {device}, SDPA"
             + (", bf16 autocast" if bf16 else "")))
    if args.sweep:  # instead of the table: one compile per batch is the sweep's whole budget
        for kind in args.models:
            sweep(kind, zoo.get_config(PRESETS[kind][0], **overrides), args, overrides, peak)
        return
    compiled_header = f" {'compiled tok/s':>14} {'ratio':>7}" if args.torch_compile else ""
    print(f"{'model':<6} {'zoo tok/s':>10} {'torch tok/s':>12} {'ratio':>7}{compiled_header} {'GFLOP/token':>12} "
          f"{'zoo MFU':>8} {'compile scan':>13} {'compile unrolled':>17}")
    for kind in args.models:
        name, task = PRESETS[kind]
        cfg = zoo.get_config(name, **overrides)
        batch = make_batch(task, args.batch, args.length, cfg.vocab_size)
        tokens = args.batch * args.length
        # BERT as its authors trained it: the MLM head only at the 20 masked positions (transformers runs it at all).
        gather = MLM_PREDICTIONS if task == "mlm" else 0
        profile_dir = os.path.join(args.profile, kind) if args.profile else None
        seconds, compile_scan, flops_per_token = zoo_step(kind, batch, args.steps, scan_layers=True,
                                                          mlm_max_predictions=gather, profile_dir=profile_dir,
                                                          **overrides)
        compile_unrolled = None if args.no_unrolled else zoo_step(
            kind, batch, 1, scan_layers=False, mlm_max_predictions=gather, **overrides)[1]
        peers = []  # seconds per PyTorch step: eager, then torch.compile'd
        if not args.no_torch:
            peers = [torch_step(kind, cfg, batch, args.steps, device, bf16, compiled=False)]
            if args.torch_compile:
                peers.append(torch_step(kind, cfg, batch, args.steps, device, bf16, compiled=True))
        columns = [f"{tokens / peers[0]:>12.0f}" if peers else f"{'-':>12}",
                   f"{peers[0] / seconds:>6.2f}x" if peers else f"{'-':>7}"]
        if args.torch_compile:
            columns += ([f"{tokens / peers[1]:>14.0f}", f"{peers[1] / seconds:>6.2f}x"] if len(peers) > 1
                        else [f"{'-':>14}", f"{'-':>7}"])
        unrolled = "-" if compile_unrolled is None else f"{compile_unrolled:.1f}s"
        print(f"{kind:<6} {tokens / seconds:>10.0f} {' '.join(columns)} {flops_per_token / 1e9:>12.3f} "
              f"{tokens * flops_per_token / seconds / peak:>8.1%} {compile_scan:>12.1f}s {unrolled:>17}", flush=True)
    if args.profile:
        print(f"jax.profiler trace of {PROFILED_STEPS} steps of each model in {args.profile}/<model> "
              f"(tensorboard --logdir {args.profile}, or a perfetto_trace.json.gz in ui.perfetto.dev)")


if __name__ == "__main__":
    main()
