"""What the chunked loss (`--config.loss.logits_chunk`) saves: the planned memory of one compiled train step with the
LM head's logits made whole, and made a chunk of positions at a time.

    python bench/chunked_loss.py [--models gpt2 llama-3.2-1b] [--shape 8x1024] [--chunks 128 512] [--dtype bfloat16]

As bench/remat.py (whose `planned_step` this uses), nothing runs: XLA's plan of each step is read back
(`compiled.memory_analysis()` temporaries), deterministic for a backend. (Not its FLOPs: XLA counts the body of the
loop over chunks once, so a chunked step would seem to cost less than it does.) Whole, a step holds
[tokens, vocab] float32 logits, their log-softmax and their gradient (8 x 1024 tokens x 50,257 = 1.5 GiB each for
GPT-2; x 128,256 = 3.9 GiB each for Llama 3.2); chunked, one chunk's, at the price of making the logits twice.
"""

from __future__ import annotations

import argparse

import jax

from remat import planned_step  # bench/ is the script's folder, so its sibling imports

PRESETS = {"gpt2": "gpt2", "llama-3.2-1b": "llama-3.2-1b", "qwen2.5-0.5b": "qwen2.5-0.5b"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gpt2", "llama-3.2-1b"], choices=sorted(PRESETS))
    parser.add_argument("--shape", default="8x1024", help="batch x length of the step")
    parser.add_argument("--chunks", nargs="+", type=int, default=[128, 512], help="positions per chunk")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--remat", default="full", help="the layers' remat policy, so the head's memory shows")
    args = parser.parse_args()
    batch, length = (int(n) for n in args.shape.split("x"))
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}: planned per train step, batch {batch} x "
          f"{length}, {args.dtype} compute, remat {args.remat}")
    for kind in args.models:
        print(f"\n{PRESETS[kind]} (causal_lm)")
        print(f"{'logits':<14} {'temp GiB':>9} {'vs whole':>8}")
        whole = None
        for chunk in [0, *args.chunks]:
            temp, _ = planned_step(PRESETS[kind], "causal_lm", batch, length, args.remat, args.dtype,
                                   logits_chunk=chunk)
            whole = whole or temp
            label = "whole" if not chunk else f"chunks of {chunk}"
            print(f"{label:<14} {temp / 2 ** 30:>9.2f} {temp / whole:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
