"""Dense vs sliding-window vs block-sparse attention as the sequence grows, on this machine.

    python bench/attention.py [--lengths 512,1024,...,16384] [--window 256] [--block-size 64] [--heads 4]
                              [--head-dim 64] [--memory-limit-gb 6] [--repeats 3] [--plot attention.png]
                              [--causal] [--dtype bfloat16] [--kernels xla,cudnn]

For each length: the time of one attention layer's forward and backward pass (`jax.grad` of the summed output
with respect to q, k and v; best of `--repeats` after a compiling warm-up), and its peak memory as XLA plans it
(`compiled.memory_analysis()`: arguments + outputs + temporaries). A program that would need more than
`--memory-limit-gb` is not run: its planned memory is printed, which is the point of sparse attention. Then the
growth from each length to the next (per doubling, dense: about 4x; sparse: about 2x), and a log-log plot of both.
With `--kernels xla,cudnn` (a GPU, bf16 or fp16, `--causal`) cuDNN's fused kernel runs dense and sliding-window
attention beside the XLA paths.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.attention import attend  # noqa: E402
from zoo.config import Config  # noqa: E402
from zoo.masks import AttentionMask  # noqa: E402

PATTERNS = ("dense", "sliding_window", "block_sparse")


def measure(cfg: Config, length: int, memory_limit: float, repeats: int) -> tuple[float | None, float | None]:
    """(seconds per forward + backward or None when over the memory limit, planned peak bytes or None when even
    compiling ran out of memory)."""
    shape = (1, length, cfg.num_heads, cfg.head_dim)
    mask = AttentionMask(causal=cfg.causal)  # one unpadded document

    def loss(query, key, value):
        return attend(query, key, value, mask, cfg, dropout=None, sparse=True).sum()

    inputs = [jax.random.normal(k, shape, cfg.dtype) for k in jax.random.split(jax.random.key(0), 3)]
    try:
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*inputs).compile()
    except jax.errors.JaxRuntimeError as error:  # a GPU compile autotunes on real buffers, which may not fit
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return None, None
    memory = compiled.memory_analysis()
    peak = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    if peak > memory_limit:
        return None, peak
    jax.block_until_ready(compiled(*inputs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*inputs))
        times.append(time.perf_counter() - start)
    return min(times), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--random-blocks", type=int, default=3)
    parser.add_argument("--global-tokens", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--memory-limit-gb", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default="attention.png")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kernels", default="xla", help="comma-separated: xla, cudnn")
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    base = Config(num_heads=args.heads, hidden_size=args.heads * args.head_dim, window=args.window,
                  block_size=args.block_size, num_random_blocks=args.random_blocks,
                  global_tokens=args.global_tokens, causal=args.causal, dtype=args.dtype, attention_dropout_rate=0.0)
    configs = {}  # column name -> config, for each pattern that each kernel can run
    for kernel in args.kernels.split(","):
        for pattern in PATTERNS:
            try:
                configs[pattern if kernel == "xla" else f"{pattern}/{kernel}"] = base.replace(
                    attention=pattern, attention_kernel=kernel, global_tokens=0 if kernel == "cudnn" else args.global_tokens)
            except ValueError as error:
                print(f"not measured: {pattern} with attention_kernel={kernel}: {error}")
    print(f"{jax.devices()[0].device_kind}: one attention layer, batch 1, {args.heads} heads of {args.head_dim}, "
          f"{args.dtype}, window {args.window}, blocks of {args.block_size}, {args.random_blocks} random blocks, "
          f"{args.global_tokens} global tokens (cudnn: 0){', causal' if args.causal else ''}; forward + backward")
    results = {}
    print(f"{'length':>7} " + " ".join(f"{p + ' ms':>19} {p + ' MB':>19}" for p in configs))
    for length in lengths:
        row = []
        for pattern, cfg in configs.items():
            seconds, peak = measure(cfg, length, args.memory_limit_gb * 2**30, args.repeats)
            results[pattern, length] = seconds, peak
            shown = "too big" if seconds is None else f"{seconds * 1e3:.1f}"
            planned = "compile OOM" if peak is None else f"{peak / 2**20:.1f}"
            row.append(f"{shown:>19} {planned:>19}")
        print(f"{length:>7} " + " ".join(row), flush=True)

    print("\ngrowth from each length to the next (time, memory):")
    for pattern in configs:
        ratios = []
        for short, long in zip(lengths, lengths[1:]):
            (t0, m0), (t1, m1) = results[pattern, short], results[pattern, long]
            time_ratio = "-" if t0 is None or t1 is None else f"{t1 / t0:.2f}"
            memory_ratio = "-" if m0 is None or m1 is None else f"{m1 / m0:.2f}"
            ratios.append(f"{short}->{long}: {time_ratio}, {memory_ratio}")
        print(f"  {pattern:>15}  " + "; ".join(ratios))

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for pattern in configs:
        measured = [(n, results[pattern, n][0]) for n in lengths if results[pattern, n][0] is not None]
        time_axis.plot(*zip(*[(n, t * 1e3) for n, t in measured]), marker="o", label=pattern)
        planned = [(n, results[pattern, n][1] / 2**20) for n in lengths if results[pattern, n][1] is not None]
        memory_axis.plot(*zip(*planned), marker="o", label=pattern)
    for axis, label in ((time_axis, "forward + backward, ms"), (memory_axis, "planned peak memory, MB")):
        axis.set(xscale="log", yscale="log", xlabel="sequence length", ylabel=label)
        axis.legend()
    figure.suptitle(f"attention cost, window {args.window}, blocks of {args.block_size} ({jax.devices()[0].platform})")
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
