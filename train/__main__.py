"""`python -m train --config configs/<recipe>.py --workdir DIR [--config.train.steps=...]`

Trains (or resumes) the recipe, then shows what the model learned. `--config.model_overrides.NAME=VALUE` sets any
zoo.Config field, whether or not the recipe sets it (VALUE read as a Python literal, else as a string). Multi-host:
pass --coordinator_address, --num_processes and --process_id (or set JAX_COORDINATOR_ADDRESS etc.) and start one
process per host.
"""

from __future__ import annotations

import ast
import difflib
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import zoo
from train.recipes import apply_process_settings
from zoo.config import CONFIG_FIELDS

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe file in configs/", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and plots go", required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process (multi-host)")


MODEL_OVERRIDE = "--config.model_overrides."


def split_model_overrides(argv: list[str]) -> tuple[list[str], dict]:
    """(argv without its `--config.model_overrides.NAME=VALUE` flags, {NAME: value}). ml_collections' config flags
    only set keys a recipe already has, and a recipe sets only the zoo.Config fields it changes, so these are taken
    here and set on the loaded config (`main`). Raises app.UsageError for a NAME that is not a zoo.Config field or a
    flag without a value."""
    rest, overrides, args = [], {}, iter(argv)
    for arg in args:
        if not arg.startswith(MODEL_OVERRIDE):
            rest.append(arg)
            continue
        name, has_value, text = arg[len(MODEL_OVERRIDE):].partition("=")
        if not has_value:  # absl's "--flag value" form
            text = next(args, None)
            if text is None:
                raise app.UsageError(f"{arg} has no value")
        if name not in CONFIG_FIELDS:
            close = difflib.get_close_matches(name, CONFIG_FIELDS, n=3)
            raise app.UsageError(f"{MODEL_OVERRIDE}{name}: {name!r} is not a zoo.Config field"
                                 + (f" (did you mean {', '.join(close)}?)" if close else ""))
        try:
            overrides[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[name] = text  # a bare word: position_embedding=rotary
    return rest, overrides


def main(argv):
    del argv
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/bert_tiny.py")
    apply_process_settings(config)  # before JAX (or jax.distributed) starts its threads
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    if _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from train.loop import create_model, export_adapter, export_model, train_and_evaluate
    from train.tasks import get_task, make_datasets

    with config.unlocked():
        config.model_overrides.update(_MODEL_OVERRIDES)
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


_MODEL_OVERRIDES: dict = {}  # the command line's, set before absl parses the rest

if __name__ == "__main__":
    try:
        sys.argv, _MODEL_OVERRIDES = split_model_overrides(sys.argv)
    except app.UsageError as error:  # before absl's own parsing, so said here, without a traceback
        sys.exit(f"error: {error}")
    app.run(main)
