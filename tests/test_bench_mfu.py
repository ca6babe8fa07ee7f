"""bench/mfu.py's peak table and PaLM FLOPs count, and bench/train_step.py's --profile trace. No timings."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from bench.mfu import BF16_PEAK_TFLOPS, bf16_peak_flops, matmul_param_count, train_flops_per_token

ROOT = Path(__file__).resolve().parents[1]

# device_kind strings as JAX reports them, with the dense bf16 peak (TFLOP/s) issue 19 names for each
DEVICE_KIND_PEAKS = {
    "NVIDIA H100 80GB HBM3": 989, "NVIDIA H200": 989, "NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100-SXM4-40GB": 312,
    "NVIDIA A100-PCIE-40GB": 312, "NVIDIA L4": 121, "TPU v4": 275, "TPU v5 lite": 197, "TPU v5e": 197,
    "TPU v5": 459, "TPU v5p": 459, "TPU v6 lite": 918, "TPU v6e": 918,
}


@pytest.mark.parametrize("device_kind, tflops", DEVICE_KIND_PEAKS.items())
def test_peak_table_covers_every_listed_device_kind(device_kind, tflops):
    assert bf16_peak_flops(device_kind) == tflops * 1e12


def test_peak_prefix_needs_a_word_boundary_and_the_longest_wins():
    assert bf16_peak_flops("NVIDIA H100 PCIe") == BF16_PEAK_TFLOPS["NVIDIA H100 PCIe"] * 1e12  # not the SXM 989
    with pytest.raises(ValueError, match="'NVIDIA L40S'"):  # an L40S is not an L4
        bf16_peak_flops("NVIDIA L40S")


def test_unknown_device_kind_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"no bf16 peak known for device kind 'Tesla T4'.*--peak-tflops"):
        bf16_peak_flops("Tesla T4")


def test_palm_flops_of_a_hand_computed_tiny_model():
    shapes = {  # a 1-layer model: tied token embedding 10 x 4, positions 8 x 4, one 4 x 4 kernel with its bias
        "token_embedding": {"embedding": jax.ShapeDtypeStruct((10, 4), "float32")},
        "embeddings": {"position_embedding": {"embedding": jax.ShapeDtypeStruct((8, 4), "float32")}},
        "layer": {"kernel": jax.ShapeDtypeStruct((4, 4), "float32"), "bias": jax.ShapeDtypeStruct((4,), "float32")},
    }
    assert matmul_param_count(shapes, tied_token_embedding=True) == 40 + 16 + 4  # positions are only looked up
    assert matmul_param_count(shapes, tied_token_embedding=False) == 16 + 4  # so is an untied token embedding
    # 6N + 12 L H Q T with N = 60, 1 layer, 2 heads of 2, 8 tokens
    assert train_flops_per_token(60, layers=1, heads=2, head_dim=2, length=8) == 6 * 60 + 12 * 1 * 2 * 2 * 8


def test_palm_flops_of_gpt2_small_counts_all_but_the_position_table():
    import zoo
    from bench.train_step import model_flops_per_token

    model = zoo.create("gpt2", task="causal_lm")
    n = 124_439_808 - 1024 * 768  # the published count less the learned positions
    assert model_flops_per_token(model, model.config, "causal_lm", 1024, 0) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_profile_writes_a_trace(tmp_path):
    command = [sys.executable, "bench/train_step.py", "--tiny", "--models", "gpt2", "--batch", "1", "--length", "8",
               "--steps", "1", "--no-torch", "--no-unrolled", "--profile", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "measured float32 matmul peak" in run.stdout
    assert list((tmp_path / "gpt2" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert list((tmp_path / "gpt2" / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
