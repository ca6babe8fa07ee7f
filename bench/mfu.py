"""Model-FLOPs utilisation: the accelerator peaks it divides by and the model FLOPs it counts.

MFU = model FLOPs per step / seconds per step / peak FLOP/s, with the model FLOPs counted as PaLM's appendix B counts
them (Chowdhery et al. 2022): a model with N parameters costs 6N matmul FLOPs per token seen (2N forward, 4N
backward) and the matmuls of dense self-attention add 6·L·H·(2·Q·T) = 12·L·H·Q·T per token (L layers, H heads,
Q head dimension, T sequence length). PaLM counts the full T for every token, causal mask or not, and so do we.
PaLM's N is its parameter count, its 6N "matmul FLOPs"; PaLM ties its embeddings and has no position table, so for
models that do we take N as the weights of matmuls (`matmul_param_count`), as nanoGPT's `estimate_mfu` does (its N
drops the position table and keeps the token embedding tied to the head).
"""

from __future__ import annotations

import flax.linen as nn
import jax

# Dense (no sparsity) bf16 tensor-core / MXU peaks in TFLOP/s from the vendors' data sheets, by the prefix of
# `jax.devices()[0].device_kind`. A prefix matches a kind equal to it or followed by " " or "-" ("NVIDIA A100" matches
# "NVIDIA A100-SXM4-80GB", "NVIDIA L4" does not match "NVIDIA L40S"); the longest matching prefix wins.
BF16_PEAK_TFLOPS = {
    "NVIDIA H100": 989.0,  # SXM ("NVIDIA H100 80GB HBM3")
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.0,
    "NVIDIA A100": 312.0,  # SXM4 and PCIe alike
    "NVIDIA L4": 121.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5e": 197.0,
    "TPU v5": 459.0,  # v5p
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,  # v6e (Trillium)
    "TPU v6e": 918.0,
}


def bf16_peak_flops(device_kind: str) -> float:
    """Dense bf16 peak FLOP/s of one device of this kind. Raises ValueError naming a kind not in the table."""
    matches = [prefix for prefix in BF16_PEAK_TFLOPS
               if device_kind == prefix or device_kind.startswith((prefix + " ", prefix + "-"))]
    if not matches:
        raise ValueError(f"no bf16 peak known for device kind {device_kind!r}; pass --peak-tflops with its dense "
                         f"bf16 peak (known kinds: {', '.join(BF16_PEAK_TFLOPS)})")
    return BF16_PEAK_TFLOPS[max(matches, key=len)] * 1e12


def matmul_param_count(params, tied_token_embedding: bool) -> int:
    """PaLM's N for a zoo parameter tree (arrays or shapes): every parameter but the embedding tables that are only
    looked up (positions, token types, an untied token embedding), since 6N counts matmul FLOPs. A token embedding
    tied to the output projection is that projection's matmul weight, and is counted once."""
    count = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]:
        names = [key.key for key in path]  # nested dicts of parameters: every key is a DictKey
        is_table = names[-1] == "embedding"
        if is_table and not (tied_token_embedding and names[0] == "token_embedding"):
            continue
        count += leaf.size
    return count


def train_flops_per_token(matmul_params: int, layers: int, heads: int, head_dim: int, length: int) -> int:
    """Model FLOPs of one training token, forward and backward, as PaLM's appendix B counts them."""
    return 6 * matmul_params + 12 * layers * heads * head_dim * length
