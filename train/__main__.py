"""`python -m train --config configs/<recipe>.py --workdir DIR [--config.train.steps=...]`

Trains (or resumes) the recipe, then shows what the model learned. Multi-host: pass --coordinator_address,
--num_processes and --process_id (or set JAX_COORDINATOR_ADDRESS etc.) and start one process per host.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import zoo

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe file in configs/", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and plots go", required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process (multi-host)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    if _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from train.loop import create_model, export_adapter, export_model, train_and_evaluate
    from train.tasks import get_task, make_datasets

    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/bert_tiny.py")
    model, initial_params = create_model(config)
    datasets = make_datasets(config, model)
    print(f"{config.model} ({model.config.family}, task={config.task}): "
          f"{zoo.param_count(model):,} parameters on {jax.device_count()} "
          f"device(s), {config.train.steps} steps of {config.train.batch_size}", flush=True)
    state, metrics = train_and_evaluate(config, _WORKDIR.value, datasets.train, datasets.eval, model=model,
                                        initial_params=initial_params)
    if jax.process_index() == 0:
        showcase = get_task(config.task).showcase
        if showcase is not None:
            showcase(model, state.params, datasets.tokenizer, config)
        workdir = os.path.abspath(_WORKDIR.value)
        print(f"\nfinal: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        print(f"checkpoints: {workdir}/checkpoints\nmetrics:     {workdir}/metrics.jsonl\n"
              f"tensorboard: {workdir}/events\nloss curve:  {workdir}/loss.png")
        if jax.process_count() > 1:  # the params are spread over the hosts: restore the checkpoint on one to export
            print("model:       not exported (a multi-host run); restore its checkpoint in one process and call "
                  "zoo.save_pretrained")
            return
        problem = export_model(model, state.params, datasets.tokenizer, os.path.join(workdir, "model"))
        print(f"model:       {workdir}/model (config.json, model.safetensors and the tokenizer, for "
              f"zoo.from_pretrained, transformers or --config.init_from{'; LoRA merged' if model.config.lora_rank else ''})" if problem is None
              else f"model:       not exported in a public format: {problem}")
        if model.config.lora_rank:
            problem = export_adapter(model, state.params, os.path.join(workdir, "adapter"))
            print(f"adapter:     {workdir}/adapter (adapter_config.json + adapter_model.safetensors, for peft's "
                  f"PeftModel.from_pretrained or zoo.load_adapter)" if problem is None
                  else f"adapter:     not exported: {problem}")


if __name__ == "__main__":
    app.run(main)
