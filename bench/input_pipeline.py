"""The input pipeline's speed: batches/s that grain builds with 0, 1 and 2 worker processes, and what building them
in workers and sending them to the devices ahead of the step buys a training run.

    python bench/input_pipeline.py [--batches 40] [--workers 0 1 2] [--train-steps 60]

1. Pipeline alone: the demo's rows (BERT MLM + NSP, 64 x 128, dynamic 80/10/10 masking) and GPT's (causal LM
   packing, 64 x 128) from the shipped corpus, drawn as fast as the pipeline gives them (the first batch, which
   starts the workers and tokenizes, is timed apart).
2. In a run: the demo recipe (configs/bert_tiny.py) for --train-steps steps with (workers, device_prefetch) =
   (0, 0), (0, 2), (2, 2); tokens/s of the steps after the first log (compiling excluded), from metrics.jsonl.
Both are ratios within one run on one machine; the machine is printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax

from train import data
from train.inputs import recipe_tokenizer
from train.recipes import apply_process_settings, load_recipe
from train.study import cpu_model


def pipeline_rate(make, workers: int, count: int) -> tuple[float, float]:
    """(seconds to the first batch, batches/s after it)."""
    batches = make(workers)
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return first, count / (time.perf_counter() - start)


def run_rate(steps: int, workers: int, device_prefetch: int) -> float:
    """tokens/s of the demo recipe's steps after its first log row."""
    from train.loop import create_model, train_and_evaluate
    from train.metrics import read_metrics
    from train.tasks import make_datasets

    config = load_recipe("bert_tiny")
    config.train.update(steps=steps, eval_every=0)
    config.schedule.warmup_steps = steps // 4
    config.checkpoint.every_steps = steps
    config.data.update(workers=workers, device_prefetch=device_prefetch)
    model, params = create_model(config)
    datasets = make_datasets(config, model)
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir, datasets.train, model=model, initial_params=params, show_progress=False)
        rows = [row for row in read_metrics(workdir) if "tokens_per_second" in row]
    later = rows[1:]  # the first row's window holds the compile
    return sum(row["tokens_per_second"] for row in later) / len(later)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per pipeline, after the first")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=60, help="steps of each demo run (0: skip the runs)")
    args = parser.parse_args()
    recipe = load_recipe("bert_tiny")
    apply_process_settings(recipe)  # as python -m train does, before JAX starts
    print(f"{cpu_model()}, {jax.device_count()} {jax.devices()[0].platform} device(s), jax {jax.__version__}")
    documents = data.shipped_documents()
    pipelines = {
        "BERT MLM+NSP 64x128": lambda workers: data.bert_pretraining_batches(
            documents, recipe_tokenizer(recipe), batch_size=64, max_length=128, max_predictions=20, workers=workers),
        "GPT packing 64x128": lambda workers: data.causal_lm_batches(
            documents, data.shipped_tokenizer(), batch_size=64, max_length=128, workers=workers),
    }
    print(f"\n{'pipeline':<22} {'workers':>7} {'first batch s':>13} {'batches/s':>10} {'vs 0':>6}")
    for name, make in pipelines.items():
        base = None
        for workers in args.workers:
            first, rate = pipeline_rate(make, workers, args.batches)
            base = base or rate
            print(f"{name:<22} {workers:>7} {first:>13.2f} {rate:>10.1f} {rate / base:>5.2f}x", flush=True)
    if args.train_steps:
        print(f"\nconfigs/bert_tiny.py, {args.train_steps} steps: tokens/s after the first log")
        print(f"{'workers':>7} {'device_prefetch':>15} {'tokens/s':>10} {'vs 0/0':>7}")
        base = None
        for workers, prefetch in ((0, 0), (0, 2), (2, 2)):
            rate = run_rate(args.train_steps, workers, prefetch)
            base = base or rate
            print(f"{workers:>7} {prefetch:>15} {rate:>10.0f} {rate / base:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
