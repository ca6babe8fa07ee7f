"""LoRA (Hu et al. 2021) around the adapters `DenseGeneral` creates when `config.lora_rank` > 0: which parameters are
adapters, and folding them into the base weights.

An adapted projection computes x W + (alpha / r) (x A) B, with A [*inputs, r] as `lora_a_<part>` and B [r, *outputs]
as `lora_b_<part>` beside its kernel; `part` is what the projection (or, for a fused one, an entry of its first
output axis: `zoo.layers.FUSED_PARTS`) computes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers import FUSED_PARTS

LORA_PREFIXES = ("lora_a_", "lora_b_")


def param_names(path: tuple) -> list[str]:
    """The module and parameter names along a tree path (a boxed parameter's path ends in its `.value`: skipped)."""
    return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def is_adapter(path: tuple) -> bool:
    """Whether the parameter at `path` (a tree path of keys) is a LoRA adapter."""
    return param_names(path)[-1].startswith(LORA_PREFIXES)


def merge_lora(model, params: dict):
    """(the model without adapters, its params with every adapter folded into its base kernel).

    The merged model's outputs equal the adapted one's (to float rounding) and it has the base architecture's
    parameters only, so `zoo.save_pretrained` writes it like any other. A model without adapters comes back as it is.
    """
    cfg = model.config
    if not cfg.lora_rank:
        return model, params
    scale = cfg.lora_alpha / cfg.lora_rank

    def merge(name: str, tree):
        if not isinstance(tree, dict):
            return tree
        if name == "layers" and cfg.scan_layers and not cfg.share_layers:  # a leading layer axis on every leaf
            return jax.vmap(lambda layer: {k: merge(k, v) for k, v in layer.items()})(tree)
        tree = {k: merge(k, v) for k, v in tree.items()}
        parts = [k.removeprefix("lora_a_") for k in tree if k.startswith("lora_a_")]
        if not parts:
            return tree
        kernel = tree["kernel"]
        for part in parts:
            a, b = tree[f"lora_a_{part}"], tree[f"lora_b_{part}"]  # [*inputs, r], [r, *outputs of the part]
            update = (jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1) * scale)
            inputs = a.ndim - 1
            if name in FUSED_PARTS:  # the part is an entry of the fused projection's first output axis
                index = (slice(None),) * inputs + (FUSED_PARTS[name].index(part),)
                kernel = kernel.at[index].add(update.astype(kernel.dtype))
            else:
                kernel = kernel + update.astype(kernel.dtype)
        return {**{k: v for k, v in tree.items() if not k.startswith(LORA_PREFIXES)}, "kernel": kernel}

    merged = jax.jit(lambda p: {k: merge(k, v) for k, v in p.items()})(params)
    return type(model)(cfg.replace(lora_rank=0), model.task), merged


# What `trainable_mask` may train besides the adapters.
ALSO_TRAINABLE = ("head", "biases")


def trainable_mask(params: dict, also_train: tuple[str, ...] = ()) -> dict:
    """True at the parameters LoRA fine-tuning updates: the adapters, and with `also_train` the task head's
    parameters ("head": a classifier a checkpoint lacks must learn) and every bias ("biases", peft's bias="all")."""
    from zoo.checkpoints import HEAD_MODULES  # noqa: PLC0415 (zoo.checkpoints imports the models this module serves)

    def trains(path, _):
        keys = param_names(path)
        return (is_adapter(path) or ("head" in also_train and keys[0] in HEAD_MODULES)
                or ("biases" in also_train and keys[-1] == "bias"))

    return jax.tree_util.tree_map_with_path(trains, params)
