"""Host memory of loading a large bfloat16 checkpoint: zoo (whole, and sharded over 8 simulated devices) against
transformers, each in its own process on the same machine in the same run.

    python bench/load_checkpoint.py [--preset llama-3.2-1b] [--folder DIR] [--shard-size-gb 1]

A random checkpoint of the preset's shape is written once in bfloat16 (sharded with `model.safetensors.index.json`,
as the public Llama checkpoints are). Each loader then runs in a fresh process that samples its anonymous resident
memory (RssAnon: what the process allocated, not the file pages the memory maps bring in) every few milliseconds;
the report gives the peak above the process's baseline after its imports, next to the size of the weights. On a CPU
the devices' buffers are host memory too, so the floor is one copy of the weights; anything above it is a host copy
the loader made on the way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from train.study import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Run in the child: sample RssAnon in a thread around `load()`, print {"peak_mb": ..., "weights_mb": ...}.
CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, {repo!r})

def rss_anon_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

{imports}
baseline, peak, done = rss_anon_mb(), [0.0], threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_anon_mb())
        time.sleep(0.005)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
start = time.perf_counter()
weights_bytes = load()
seconds = time.perf_counter() - start
done.set()
thread.join()
peak[0] = max(peak[0], rss_anon_mb())
print(json.dumps({{"peak_mb": peak[0] - baseline, "weights_mb": weights_bytes / 2**20, "seconds": seconds}}))
"""

LOADERS = {
    "zoo": """
import jax, zoo
def load():
    _, params = zoo.from_pretrained({folder!r}, param_dtype="bfloat16", dtype="bfloat16")
    jax.block_until_ready(params)
    return sum(x.nbytes for x in jax.tree.leaves(params))
""",
    "zoo, sharded over 8 devices (fsdp)": """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import flax.linen as nn, jax, numpy as np, zoo
def load():
    model = zoo.create({preset!r}, task="causal_lm", param_dtype="bfloat16")
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *zoo.registry.example_inputs(model)))["params"]
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("fsdp",))
    rules = (("vocab", "fsdp"), ("embed", "fsdp"), ("mlp", "fsdp"))
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    _, params = zoo.from_pretrained({folder!r}, param_dtype="bfloat16", dtype="bfloat16", shardings=shardings)
    jax.block_until_ready(params)
    return sum(x.nbytes for x in jax.tree.leaves(params))
""",
    "transformers": """
import torch, transformers
def load():
    model = transformers.AutoModelForCausalLM.from_pretrained({folder!r}, dtype=torch.bfloat16)
    return sum(p.numel() * p.element_size() for p in model.parameters())
""",
}


def write_checkpoint(preset: str, folder: str, shard_size: int) -> None:
    """Random bfloat16 weights of `preset`'s shape, drawn leaf by leaf so the writer never holds a float32 copy."""
    import jax
    import jax.numpy as jnp

    import zoo

    model = zoo.create(preset, task="causal_lm", param_dtype="bfloat16")
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *zoo.registry.example_inputs(model)))["params"]
    leaves, tree = jax.tree.flatten(__import__("flax").linen.unbox(abstract))
    draw = jax.jit(lambda key, shape: 0.02 * jax.random.normal(key, shape, jnp.bfloat16), static_argnums=1)
    params = jax.tree.unflatten(tree, [draw(jax.random.key(i), leaf.shape) for i, leaf in enumerate(leaves)])
    zoo.save_pretrained(model, params, folder, max_shard_size=shard_size)


def measure(name: str, code: str, preset: str, folder: str) -> dict:
    script = CHILD.format(repo=REPO, imports=code.format(folder=folder, preset=preset))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="llama-3.2-1b")
    parser.add_argument("--folder", default="", help="where the random checkpoint goes (default: a temporary one)")
    parser.add_argument("--shard-size-gb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or os.path.join(scratch, args.preset)
        if not os.path.exists(os.path.join(folder, "config.json")):
            print(f"writing a random bfloat16 {args.preset} checkpoint to {folder} ...", flush=True)
            write_checkpoint(args.preset, folder, int(args.shard_size_gb * 2**30))
        print(f"\n{args.preset}, bfloat16, on {cpu_model()} ({os.cpu_count()} cores)")
        print(f"{'loader':<36} {'weights':>10} {'peak host memory':>17} {'x weights':>10} {'seconds':>8}")
        for name, code in LOADERS.items():
            r = measure(name, code, args.preset, folder)
            print(f"{name:<36} {r['weights_mb']:>8.0f}MB {r['peak_mb']:>15.0f}MB {r['peak_mb'] / r['weights_mb']:>10.2f}"
                  f" {r['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
