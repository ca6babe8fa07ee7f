"""Small, deterministic stand-ins for the data pipeline and recipes, shared by the training tests."""

import os
import socket
import subprocess
import sys

import numpy as np

from train.recipes import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The suite compiles hundreds of small programs that each run for milliseconds: LLVM's expensive optimisations cost
# more compile time than they save (measured on a tiny BERT: init and first step compile 45% faster, steps as fast,
# the same loss to 6 digits).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process: `devices` simulated CPU devices, compiled quickly."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_FLAGS}"


def run_two_hosts(script: str, workdir, timeout: float) -> list[list[str]]:
    """Runs `script` as processes 0 and 1 of a two-host job on 127.0.0.1, each with 2 CPU devices; the script is
    formatted with {repo}, {port}, {pid} and {workdir} and prints its results on lines that start with RESULT.
    Returns each RESULT line's fields after the word, host 0's lines first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-c", script.format(repo=REPO, port=port, pid=pid, workdir=str(workdir))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for pid in range(2)]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    for pid, (p, (_, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"host {pid}: {err[-3000:]}"
    return [line.split()[1:] for out, _ in outputs for line in out.splitlines() if line.startswith("RESULT")]


class SyntheticBatches:
    """Batch i is a pure function of (seed, i): resumable from {'position': i}, like the real iterators."""

    def __init__(self, batch_size=8, length=16, vocab=1000, seed=0, task="mlm", process_index=0, process_count=1):
        self.batch_size, self.length, self.vocab, self.seed, self.task = batch_size, length, vocab, seed, task
        self.process_index, self.process_count = process_index, process_count
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        ids = rng.integers(5, self.vocab, (self.batch_size, self.length)).astype(np.int32)
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if self.task == "mlm":
            batch["mlm_labels"] = np.where(rng.random(ids.shape) < 0.15, ids, -100).astype(np.int32)
            batch["input_ids"] = np.where(batch["mlm_labels"] >= 0, 4, ids).astype(np.int32)
        if self.task == "seq2seq":  # targets of half the length, the decoder reading them shifted right after 0
            labels = rng.integers(5, self.vocab, (self.batch_size, self.length // 2)).astype(np.int32)
            batch.update(labels=labels, decoder_input_ids=np.pad(labels[:, :-1], ((0, 0), (1, 0))),
                         decoder_attention_mask=np.ones_like(labels))
        if self.task == "sequence_classification":
            batch["labels"] = rng.integers(0, 2, (self.batch_size,)).astype(np.int32)
        rows = self.batch_size // self.process_count
        return {k: v[self.process_index * rows:(self.process_index + 1) * rows] for k, v in batch.items()}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


def tiny_config(model="bert-tiny", task="mlm", steps=6, every_steps=3, **mesh):
    """`base_config()` with a tiny run: 8 rows a step, a log every step, a checkpoint every `every_steps`."""
    c = base_config()
    c.model, c.task = model, task
    c.model_overrides.update({"dropout_rate": 0.1})
    c.train.update({"steps": steps, "batch_size": 8, "log_every": 1, "eval_every": 0})
    c.optimizer.update({"learning_rate": 1e-3, "b2": 0.999})
    c.schedule.update({"warmup_steps": 2})
    c.checkpoint.update({"every_steps": every_steps, "keep": 3})
    c.mesh.update(mesh)
    return c
