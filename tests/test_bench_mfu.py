"""bench/mfu.py's peak table and PaLM FLOPs count, bench/train_step.py's --profile trace and its sweep's stop at out of
memory. No timings."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import zoo
from bench import train_step
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
    model = zoo.create("gpt2", task="causal_lm")
    n = 124_439_808 - 1024 * 768  # the published count less the learned positions
    assert train_step.model_flops_per_token(model, model.config, "causal_lm", 1024, 0) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_profile_writes_a_trace(tmp_path):
    command = [sys.executable, "bench/train_step.py", "--tiny", "--models", "gpt2", "--batch", "1", "--length", "8",
               "--steps", "1", "--no-torch", "--no-unrolled", "--profile", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "measured float32 matmul peak" in run.stdout
    assert list((tmp_path / "gpt2" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert list((tmp_path / "gpt2" / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))


def test_sweep_stops_at_the_first_out_of_memory_batch_and_names_the_best(monkeypatch, capsys):
    def fake_step(kind, batch, steps, scan_layers, mlm_max_predictions=0, **overrides):
        size = batch["input_ids"].shape[0]
        if size > 4:  # what XLA raises when a buffer does not fit on the device
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.9GiB.")
        return {1: 1.0, 2: 0.5, 4: 1.5}[size], 0.0, 100  # batch 2 is the fastest: 4 rows of 8 tokens a second

    monkeypatch.setattr(train_step, "zoo_step", fake_step)
    args = argparse.Namespace(length=8, steps=1, sweep_min=1, sweep_max=64)
    train_step.sweep("gpt2", zoo.get_config("gpt2"), args, {}, peak=1e4)
    out = capsys.readouterr().out
    assert "8 out of device memory: RESOURCE_EXHAUSTED" in out and " 16 " not in out
    assert "best batch for gpt2 on cpu: 2 (32 tokens/s)" in out


def test_sweep_lets_other_runtime_errors_through(monkeypatch):
    def failing_step(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("INTERNAL: cuDNN failed")

    monkeypatch.setattr(train_step, "zoo_step", failing_step)
    args = argparse.Namespace(length=8, steps=1, sweep_min=1, sweep_max=4)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        train_step.sweep("gpt2", zoo.get_config("gpt2"), args, {}, peak=1e4)
