"""Pretrained checkpoints both ways, in the public layout `transformers` reads and writes: a folder with `config.json`
and `model.safetensors` (or shards listed in `model.safetensors.index.json`).

Loading maps the safetensors files into memory (never unpickles) and reads each parameter's tensors as views in zoo's
layout; with a target sharding each device's slice is read and converted on its own, so a large weight is never
whole on one host. Saving writes what
`transformers` loads with no missing or unexpected keys. Each family's record (zoo/families/) says only what differs
in its `PublicFormat`: how its config.json fields map onto `Config`, and which public tensors make each zoo parameter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_dtypes
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from zoo.config import Config
from zoo.families import FAMILIES, PUBLIC_FORMATS, PublicFormat
from zoo.families.mapping import PublicConfig, Tensor, flatten, unflatten
from zoo.files import read_json_object
from zoo.layers import FUSED_PARTS
from zoo.lora import is_adapter
from zoo.registry import create, example_inputs

LOG = logging.getLogger(__name__)
# safetensors' dtype names -> numpy's (bfloat16 from ml_dtypes, which jax depends on); little-endian, as the format is
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16, "I64": "<i8",
                      "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
# Top-level modules that belong to a head, not the body: a checkpoint without them still loads (they are initialised).
HEAD_MODULES = ("pooler", "mlm_head", "seq_relationship_head", "classifier", "qa_head", "lm_head",
                "classification_head")
# Fields not written in config.json: how zoo runs a model, not what the model is.
RUNTIME_FIELDS = ("dtype", "param_dtype", "remat", "scan_layers", "pooling")
# the LoRA switch: a peft adapter folder holds it (save_adapter), not config.json
ADAPTER_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
AUTO = "auto"


def from_pretrained(folder: str | Path, task: str | None = AUTO, *, dtype: Any = None, shardings: Any = None,
                    rng: jax.Array | None = None, **overrides) -> tuple[nn.Module, dict]:
    """(model, params) from a `config.json` + safetensors folder; `task` defaults to the one of its architecture.

    `task=None` gives the bare model; a task whose head the checkpoint lacks initializes that head from `rng` and logs
    which parameters it initialized. `dtype` is the compute dtype; `overrides` are further `Config` fields
    (`scan_layers=True`, `remat="full"`, ...). `shardings` is a pytree of `jax.sharding.Sharding` matching the params,
    or a function `(path, shape) -> Sharding` of the '/'-joined parameter path; each parameter is placed on its
    sharding as it is read.
    Raises:
      FileNotFoundError: no config.json, no weights, or a shard the index lists is not there. ValueError naming the
      file: config.json or the index is not valid JSON (or not an object, or the index has no weight_map), a
      safetensors file is not one or is truncated; pickled weights only (with how to convert), a config.json field
      zoo cannot honour (named), missing or unknown tensors or a shape mismatch (named, with shapes).
    """
    folder = Path(folder)
    if not (folder / CONFIG).exists():
        raise FileNotFoundError(f"{folder / CONFIG} not found: a checkpoint folder holds config.json and {WEIGHTS}")
    public = read_json_object(folder / CONFIG)
    fmt = _public_format(public)
    if task == AUTO:
        architecture = (public.get("architectures") or [fmt.architecture(None)])[0]
        if architecture not in fmt.architectures:
            raise ValueError(f"architecture {architecture!r} is not supported (pass `task` to load its body); for "
                             f"model_type {fmt.model_type!r} zoo reads: {', '.join(fmt.architectures)}")
        task = fmt.architectures[architecture]
    reader = PublicConfig(public)
    cfg = fmt.config_from_public(reader, task)
    if reader.unread():
        LOG.warning("config.json fields not used by zoo: %s", ", ".join(reader.unread()))
    if dtype is not None:
        overrides["dtype"] = dtype
    checkpoint_cfg = cfg
    cfg = cfg.replace(**{"num_labels": reader.num_labels(), "label_names": reader.label_names(), **overrides})
    model = create(cfg, task)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))["params"]
    abstract = flatten(nn.unbox(shapes))
    placement = _placement(shardings, abstract)
    spec = flatten(fmt.tensors(cfg, task))
    with _Checkpoint(folder, fmt.prefix) as checkpoint:
        # LoRA adapters (a lora_rank override) are not in the public format: they start from rng
        params = {path: None if _is_adapter(path) else
                  _read_param(checkpoint, _parts(spec, path, leaf.shape), path, leaf, placement(path))
                  for path, leaf in abstract.items()}
        _check_unused(fmt, (cfg, checkpoint_cfg), checkpoint.unread())
    missing = [path for path, value in params.items() if value is None]
    if missing:
        params.update(_initialize_heads(model, missing, spec, abstract, placement, rng))
    return model, unflatten(params)


def save_pretrained(model: nn.Module, params: dict, folder: str | Path, *, max_shard_size: int | None = None) -> None:
    """Writes `config.json` and `model.safetensors` (shards of at most `max_shard_size` bytes plus the index when
    given) that `transformers` loads into the architecture of `model.task` with no missing or unexpected keys.

    Raises ValueError when the config has a switch the public format cannot express (named), or the params do not
    fit the model.
    """
    problem = public_format_problem(model)
    if problem is not None:
        raise ValueError(problem)
    cfg, task = model.config, model.task
    fmt = FAMILIES[cfg.family].public
    architecture = fmt.architecture(task)
    public = fmt.config_to_public(cfg)
    if "params" in params and len(params) == 1:
        params = params["params"]
    spec = flatten(fmt.tensors(cfg, task))
    tensors = {}
    for path, value in flatten(nn.unbox(params)).items():
        parts = _parts(spec, path, value.shape)
        values = [value] if len(parts) == 1 and parts[0][1] == value.shape else list(value)
        for (tensor, _), v in zip(parts, values):
            tensors.update(tensor.public(np.asarray(v)))
    expected = {name for t in spec.values() for name in t.names}
    if expected - set(tensors):
        raise ValueError(f"params lack the tensors {sorted(expected - set(tensors))} of {architecture}")
    tensors.update(fmt.computed(cfg))
    if task is None:  # a bare model's tensors carry no prefix
        tensors = {name.removeprefix(fmt.prefix): t for name, t in tensors.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_tensors(tensors, folder, max_shard_size)
    public = {"architectures": [architecture], "model_type": fmt.model_type, **public, "dtype": cfg.param_dtype.name}
    if model.heads[task].classes_from_config:
        public.update(_labels(cfg.num_labels, cfg.label_names))
    (folder / CONFIG).write_text(json.dumps(public, indent=2, sort_keys=True) + "\n")


def _public_format(public: dict) -> PublicFormat:
    model_type = public.get("model_type")
    if model_type not in PUBLIC_FORMATS:
        raise ValueError(f"config.json model_type={model_type!r} is not supported; zoo reads: "
                         f"{', '.join(PUBLIC_FORMATS)}")
    return PUBLIC_FORMATS[model_type].public


def _parts(spec: dict[str, Tensor], path: str, shape: tuple) -> list[tuple[Tensor, tuple]]:
    """The public tensors of the zoo parameter at `path`: one entry, or one per layer of a scanned stack."""
    if path in spec:
        return [(spec[path], shape)]
    stacked = re.sub(r"/layers/", "/layers_{}/", path, count=1)
    if stacked != path and all(stacked.format(i) in spec for i in range(shape[0])):
        return [(spec[stacked.format(i)], shape[1:]) for i in range(shape[0])]
    raise ValueError(f"zoo parameter {path} {tuple(shape)} has no public name in this architecture")


def _read_param(checkpoint: "_Checkpoint", parts: list, path: str, leaf, sharding) -> jax.Array | None:
    """One zoo parameter from its public tensors, put on `sharding`; None when the checkpoint lacks any of them.

    The public tensors are views of the memory-mapped files in zoo's layout, so with a sharding each device's shard
    is read, converted and put on its device on its own: no host array of the whole parameter exists, and a process
    reads only the shards of its own devices.
    """
    if not all(name in checkpoint for tensor, _ in parts for name in tensor.names):
        return None
    views = [tensor.zoo_parts([checkpoint.read(name, tensor.public_shape(shape), path) for name in tensor.names],
                              shape) for tensor, shape in parts]
    checkpoint.used.update(alias for tensor, _ in parts for alias in tensor.aliases)
    # several parts: one per layer, stacked on a leading axis (scanned layers); several views: stacked on axis `rows`
    slices = _Slices(views, stacked_layers=len(parts) > 1 or parts[0][1] != leaf.shape, names_axis=parts[0][0].rows,
                     dtype=leaf.dtype)
    if sharding is None:
        return jax.device_put(slices[(slice(None),) * len(leaf.shape)])
    # one device at a time, so a slice can be freed once it is on its device; this host's devices only
    on_devices = [jax.device_put(slices[index], device)
                  for device, index in sharding.addressable_devices_indices_map(leaf.shape).items()]
    return jax.make_array_from_single_device_arrays(leaf.shape, sharding, on_devices)


class _Slices:
    """A zoo parameter read lazily from views of its public tensors: `[index]` is a fresh array of just that slice,
    in the parameter's dtype (fresh: jax may alias the host memory it is given, and the views map the files)."""

    def __init__(self, views: list[list[np.ndarray]], *, stacked_layers: bool, names_axis: int, dtype):
        self.views, self.stacked_layers, self.names_axis, self.dtype = views, stacked_layers, names_axis, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        if self.stacked_layers:
            layers = range(len(self.views))[index[0]]
            return np.stack([self._one(self.views[i], index[1:]) for i in layers])
        return self._one(self.views[0], index)

    def _one(self, views: list[np.ndarray], index: tuple) -> np.ndarray:
        if len(views) == 1:
            return np.array(views[0][index], dtype=self.dtype)  # copies only the slice
        axis = self.names_axis
        picked = range(len(views))[index[axis]]
        rest = index[:axis] + index[axis + 1:]
        return np.stack([np.array(views[i][rest], dtype=self.dtype) for i in picked], axis=axis)


def _placement(shardings: Any, abstract: dict) -> Callable[[str], Any]:
    if shardings is None:
        return lambda path: None
    if callable(shardings):
        return lambda path: shardings(path, abstract[path].shape)
    flat = flatten(shardings)
    if set(flat) != set(abstract):
        raise ValueError(f"shardings do not match the params: missing {sorted(set(abstract) - set(flat))}, "
                         f"extra {sorted(set(flat) - set(abstract))}")
    return flat.__getitem__


class _Checkpoint:
    """Public tensor names -> views of model.safetensors or the shards of its index, each file memory-mapped once."""

    def __init__(self, folder: Path, prefix: str):
        self.folder, self.used = folder, set()
        self.mapped: dict[str, tuple[np.memmap, dict]] = {}
        if (folder / INDEX).exists():
            files = _read_index(folder / INDEX)
        elif (folder / WEIGHTS).exists():
            files = dict.fromkeys(self._map(WEIGHTS)[1], WEIGHTS)
        elif list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
            raise ValueError(
                f"{folder} holds only pickled PyTorch weights ({', '.join(p.name for p in folder.glob('*.bin'))}); "
                "zoo reads safetensors and never unpickles. Convert once with transformers: "
                "`AutoModel.from_pretrained(folder).save_pretrained(folder)` (or the task's Auto class; transformers "
                "4.x needs `safe_serialization=True`), which writes model.safetensors")
        else:
            raise FileNotFoundError(f"{folder} has neither {WEIGHTS} nor {INDEX}")
        # A bare model's names carry no prefix; name them as the task architectures do.
        add_prefix = not any(name.startswith(prefix) for name in files)
        self.files = {_legacy_name(prefix + name if add_prefix else name): (file, name)
                      for name, file in files.items()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.mapped.clear()  # the views handed out keep their maps open as long as they live

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def _map(self, file: str) -> tuple[np.memmap, dict]:
        """(the file's data bytes, mapped; its tensors' header entries), checked and mapped once per file."""
        if file not in self.mapped:
            data_start, header = _read_header(self.folder / file)
            header.pop("__metadata__", None)
            size = (self.folder / file).stat().st_size - data_start
            data = np.memmap(self.folder / file, np.uint8, mode="r", offset=data_start, shape=(size,)) if size else \
                np.zeros((0,), np.uint8)
            self.mapped[file] = data, header
        return self.mapped[file]

    def read(self, name: str, shape: tuple, path: str) -> np.ndarray:
        """A read-only view of tensor `name`, checked to have `shape`; nothing is copied."""
        file, stored = self.files[name]
        data, header = self._map(file)
        entry = header.get(stored)
        if not isinstance(entry, dict) or {"dtype", "shape", "data_offsets"} - set(entry):
            raise ValueError(f"{self.folder / file}: the header entry of tensor {stored} is not a safetensors entry "
                             f"(dtype, shape, data_offsets)")
        if tuple(entry["shape"]) != tuple(shape):
            raise ValueError(f"tensor {name} has shape {tuple(entry['shape'])} in the checkpoint but zoo expects "
                             f"{tuple(shape)} (for parameter {path})")
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{self.folder / file}: tensor {stored} has dtype {entry['dtype']}, which zoo cannot "
                             f"read (it reads {', '.join(SAFETENSORS_DTYPES)})")
        dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
        start, end = entry["data_offsets"]
        if end - start != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"{self.folder / file}: tensor {stored} spans {end - start} bytes, not the "
                             f"{dtype.itemsize * int(np.prod(shape))} of {entry['dtype']} {tuple(shape)}")
        self.used.add(name)
        return data[start:end].view(dtype).reshape(shape)

    def unread(self) -> list[str]:
        return sorted(set(self.files) - self.used)


def _read_index(index: Path) -> dict[str, str]:
    """tensor name -> shard file of a `model.safetensors.index.json`, every shard checked to be there."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(file, str) for file in weight_map.values()):
        raise ValueError(f"{index}: no \"weight_map\" object mapping each tensor name to its shard file")
    missing = sorted({file for file in weight_map.values() if not (index.parent / file).is_file()})
    if missing:
        raise FileNotFoundError(f"{index} lists shards that are not in {index.parent}: {', '.join(missing)}")
    return weight_map


def _legacy_name(name: str) -> str:
    """The original TF-converted checkpoints (bert-base-uncased among them) call LayerNorm weights gamma and beta."""
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def _read_header(file: Path) -> tuple[int, dict]:
    """(offset of the data, JSON header) of a safetensors file: 8 bytes of little-endian header length, the header,
    then the tensors' bytes. Raises ValueError naming the file when it is not a safetensors file or is truncated."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        start = f.read(16)
        header_size = int.from_bytes(start[:8], "little")
        if start[8:9] != b"{":  # random bytes, a text or an HTML page: no JSON header after the 8-byte length
            raise ValueError(f"{file}: not a safetensors file (it does not start with an 8-byte header length and a "
                             f"JSON header; its first bytes are {start!r})")
        if 8 + header_size > size:
            raise ValueError(f"{file}: truncated: its header is {header_size} bytes but only {size - 8} follow the "
                             f"header length")
        f.seek(8)
        header = f.read(header_size)
    try:
        header = json.loads(header)
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError on bytes that are not UTF-8
        raise ValueError(f"{file}: not a safetensors file (its header is not valid JSON: {e})") from None
    data_size = size - 8 - header_size
    end = max((entry["data_offsets"][1] for key, entry in header.items()
               if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry), default=0)
    if end > data_size:
        raise ValueError(f"{file}: truncated: its tensors need {end} bytes of data but it holds {data_size}")
    return 8 + header_size, header


def _check_unused(fmt: PublicFormat, configs: tuple[Config, ...], unread: list[str]) -> None:
    """Tensors of other heads of the family, or that an override switched off (`position_embedding="none"` drops
    the position table the checkpoint's own config has), are dropped (logged); tensors no architecture of any of
    `configs` has are an error."""
    known = set()
    for cfg in configs:
        for task in set(fmt.architectures.values()):
            known |= {name for t in flatten(fmt.tensors(cfg.replace(pooling="cls"), task)).values() for name in t.names}
    unknown = [n for n in unread if n not in known and not any(re.fullmatch(p, n) for p in fmt.ignored)]
    if unknown:
        raise ValueError(f"unexpected tensors in the checkpoint, which no {fmt.model_type} architecture zoo reads "
                         f"has: {', '.join(unknown)}")
    dropped = [n for n in unread if n in known]
    if dropped:
        LOG.warning("checkpoint tensors not used by this task and config: %s", ", ".join(dropped))


def _is_adapter(path: str) -> bool:
    """`zoo.lora.is_adapter` for a '/'-joined parameter path."""
    return is_adapter(tuple(jax.tree_util.DictKey(k) for k in path.split("/")))


def _initialize_heads(model, missing: list[str], spec: dict, abstract: dict, placement, rng) -> dict:
    """Fresh values for the missing parameters, which must all belong to a head or be LoRA adapters; the body must
    be in the file."""
    body = [p for p in missing if p.split("/")[0] not in HEAD_MODULES and not _is_adapter(p)]
    if body:
        lines = [f"{name} {t.public_shape(s)}" for p in body for t, s in _parts(spec, p, abstract[p].shape)
                 for name in t.names]
        raise ValueError(f"missing tensors in the checkpoint: {', '.join(lines)}")
    LOG.warning("initialized from rng, not found in the checkpoint: %s", ", ".join(missing))
    rng = jax.random.key(0) if rng is None else rng

    def init(key):
        params = flatten(nn.unbox(model.init(key, *example_inputs(model))["params"]))
        return {path: params[path] for path in missing}  # only these are computed: jit drops the rest

    values = jax.jit(init)(rng)
    return {path: jax.device_put(value, placement(path)) for path, value in values.items()}


def public_format_problem(model: nn.Module) -> Optional[str]:
    """Why `save_pretrained` cannot write `model` in its family's public format (LoRA adapters, no format, no
    architecture for its task, or a switch the format's config.json cannot express, named), or None when it can."""
    cfg, task = model.config, model.task
    if cfg.lora_rank:
        return (f"the model has LoRA adapters (lora_rank={cfg.lora_rank}), which a transformers checkpoint cannot "
                "hold: save zoo.merge_lora(model, params), or the base model's params and the adapters with "
                "zoo.save_adapter")
    fmt = FAMILIES[cfg.family].public if cfg.family in FAMILIES else None
    if fmt is None:
        with_one = [name for name, f in FAMILIES.items() if f.public is not None]
        return f"zoo family {cfg.family!r} has no public format; those with one: {', '.join(with_one)}"
    if fmt.architecture(task) is None:
        return (f"task {task!r} has no {fmt.model_type} architecture; the tasks with one: "
                f"{', '.join(str(t) for t in fmt.architectures.values())}")
    # Read config.json back: a zoo field that comes back different cannot be written in this format.
    reread = fmt.config_from_public(PublicConfig(fmt.config_to_public(cfg)), task)
    reread = reread.replace(num_labels=cfg.num_labels, label_names=cfg.label_names)  # written as id2label
    lost = [f"{f.name}={getattr(cfg, f.name)!r} (the {fmt.model_type} format has {getattr(reread, f.name)!r})"
            for f in dataclasses.fields(cfg)
            if f.name not in RUNTIME_FIELDS + ADAPTER_FIELDS and getattr(cfg, f.name) != getattr(reread, f.name)]
    if lost:
        return f"config fields a {fmt.model_type} config.json cannot express: {'; '.join(lost)}"
    return None


def _labels(num_labels: int, label_names: tuple[str, ...] = ()) -> dict:
    id2label = {str(i): label_names[i] if label_names else f"LABEL_{i}" for i in range(num_labels)}
    return {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}


def _write_tensors(tensors: dict[str, np.ndarray], folder: Path, max_shard_size: int | None) -> None:
    metadata = {"format": "pt"}
    total = sum(t.nbytes for t in tensors.values())
    if max_shard_size is None or total <= max_shard_size:
        save_file(tensors, folder / WEIGHTS, metadata=metadata)
        return
    shards, size = [{}], 0
    for name, tensor in tensors.items():
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name], size = tensor, size + tensor.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / file, metadata=metadata)
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what peft's PeftModel puts before the transformers module names
# zoo task -> (peft's task_type, the head modules peft's model of that task trains and saves whole beside the
# adapters: its modules_to_save, written by their transformers names like the base model's)
PEFT_TASKS = {"causal_lm": ("CAUSAL_LM", ()), "seq2seq": ("SEQ_2_SEQ_LM", ()),
              "sequence_classification": ("SEQ_CLS", ("classifier", "score")),
              "token_classification": ("TOKEN_CLS", ("classifier", "score")),
              "question_answering": ("QUESTION_ANS", ("qa_outputs",))}
# adapter_config.json fields that change what peft computes, and the only value zoo's adapters compute
PEFT_FIXED = {"bias": "none", "use_rslora": False, "use_dora": False, "lora_bias": False, "rank_pattern": {},
              "alpha_pattern": {}, "layers_to_transform": None, "target_parameters": None}


def _params_tree(params: dict) -> dict:
    """The parameter tree of `params` or of {"params": params}, unboxed."""
    return nn.unbox(params["params"] if "params" in params and len(params) == 1 else params)


def _stacked(path: str, cfg: Config) -> bool:
    """Whether the parameter at `path` has a leading layer axis (scan over layers)."""
    return "/layers/" in path and cfg.scan_layers and not cfg.share_layers


def _public_names(model: nn.Module, tensor: Tensor) -> tuple[str, ...]:
    """The names `tensor` has in the transformers model of `model.task` (a bare model's carry no prefix)."""
    prefix = FAMILIES[model.config.family].public.prefix
    return tensor.names if model.task is not None else tuple(n.removeprefix(prefix) for n in tensor.names)


def _adapter_modules(model: nn.Module, shapes: dict[str, tuple]) -> dict[str, list[str]]:
    """Each adapter's '/'-joined zoo path -> the transformers module it adapts (one per layer of a scanned stack),
    found through the family's public tensor mapping of its base kernel.

    Raises ValueError for what peft's layout cannot say: a family or task without a public format, and a fused zoo
    projection whose public tensor is fused too (GPT-2's c_attn: zoo gives each of q/k/v its own A, peft one A for the
    whole of c_attn).
    """
    problem = public_format_problem(type(model)(model.config.replace(lora_rank=0), model.task))  # the base model's
    if problem is not None:
        raise ValueError(f"LoRA adapters of this model cannot be written in peft's layout: {problem}")
    spec = flatten(FAMILIES[model.config.family].public.tensors(model.config, model.task))
    modules = {}
    for path, shape in shapes.items():
        *module, leaf = path.split("/")
        part = leaf.removeprefix("lora_a_").removeprefix("lora_b_")
        parts = FUSED_PARTS.get(module[-1], (part,))
        names = []
        for tensor, _ in _parts(spec, "/".join(module + ["kernel"]), shape):
            public = _public_names(model, tensor)
            if len(public) != len(parts):
                raise ValueError(f"{model.config.family}: LoRA on {path} cannot be written in peft's layout: zoo "
                                 f"adapts each of {'/'.join(parts)} with its own A, peft adapts the fused "
                                 f"{public[0].removesuffix('.weight')} with one A for all of them (lora_targets without "
                                 f"{'/'.join(parts)} can be written)")
            names.append(public[parts.index(part)].removesuffix(".weight"))
        modules[path] = names
    return modules


def _head_tensors(model: nn.Module) -> dict[str, Tensor]:
    """'/'-joined zoo path -> the public tensor, of the head parameters peft's model of `model.task` saves whole."""
    saved = PEFT_TASKS.get(model.task, (None, ()))[1]
    spec = flatten(FAMILIES[model.config.family].public.tensors(model.config, model.task))
    return {path: t for path, t in spec.items() if path.split("/")[0] in HEAD_MODULES
            and all(name.split(".")[0] in saved for name in _public_names(model, t))}


def _adapter_config(model: nn.Module, modules: dict[str, list[str]]) -> dict:
    cfg = model.config
    task_type, saved = PEFT_TASKS.get(model.task, (None, ()))
    # full module names: a short one ("dense") would also match modules zoo does not adapt
    targets = sorted({name for names in modules.values() for name in names})
    return {"peft_type": "LORA", "task_type": task_type, "r": cfg.lora_rank, "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout, "fan_in_fan_out": False, "inference_mode": True,
            "init_lora_weights": True, "modules_to_save": list(saved) or None, "base_model_name_or_path": None,
            "target_modules": targets, **PEFT_FIXED}


def save_adapter(model: nn.Module, params: dict, folder: str | Path) -> None:
    """Writes the LoRA adapters of `params` as `adapter_config.json` + `adapter_model.safetensors` in the layout of
    Hugging Face peft, which `peft.PeftModel.from_pretrained` loads onto the transformers model that
    `zoo.save_pretrained` writes from the same base weights. For a classifier (peft's SEQ_CLS, TOKEN_CLS,
    QUESTION_ANS) the head that peft trains beside the adapters is written too, as peft does.

    Raises ValueError when the params have no adapters or peft's layout cannot express them (named).
    """
    cfg = model.config
    flat = {path: np.asarray(v) for path, v in flatten(_params_tree(params)).items()}
    adapters = {path: v for path, v in flat.items() if _is_adapter(path)}
    if not adapters:
        raise ValueError("the params have no LoRA adapters (create the model with lora_rank > 0)")
    modules = _adapter_modules(model, {path: v.shape for path, v in adapters.items()})
    tensors = {}
    for path, value in adapters.items():
        layers = list(value) if _stacked(path, cfg) else [value]
        for name, v in zip(modules[path], layers, strict=True):
            if path.split("/")[-1].startswith("lora_a_"):  # zoo [*inputs, r] -> peft's lora_A [r, in]
                tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(v.reshape(-1, v.shape[-1]).T)
            else:  # zoo [r, *outputs] -> peft's lora_B [out, r]
                tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(v.reshape(v.shape[0], -1).T)
    for path, tensor in _head_tensors(model).items():
        tensors.update({f"{PEFT_PREFIX}{name}": t for name, t in tensor.public(flat[path]).items()})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(_adapter_config(model, modules), indent=2, sort_keys=True) + "\n")


def _check_adapter_config(model: nn.Module, modules: dict[str, list[str]], file: Path) -> None:
    """A ValueError naming `file` unless the adapters it describes are the ones `model` has."""
    cfg, written = model.config, read_json_object(file)
    if written.get("peft_type") != "LORA":
        raise ValueError(f"{file}: peft_type={written.get('peft_type')!r}; zoo reads LORA adapters")
    for field, value in (("r", cfg.lora_rank), ("lora_alpha", cfg.lora_alpha)):
        if written.get(field) != value:
            raise ValueError(f"{file}: {field}={written.get(field)!r} but the model has {value!r} (create it with "
                             f"lora_rank={written.get('r')!r}, lora_alpha={written.get('lora_alpha')!r})")
    for field, value in PEFT_FIXED.items():
        if written.get(field, value) not in (value, None):  # peft writes the defaults, or null for some
            raise ValueError(f"{file}: {field}={written[field]!r} is not supported by zoo's LoRA (supported: "
                             f"{value!r})")
    targets = written.get("target_modules")
    targets = [targets] if isinstance(targets, str) else targets or []
    # peft adapts a module whose name is a target or ends in "." + one
    adapted = {name for names in modules.values() for name in names}
    covered = {name for name in adapted if any(name == t or name.endswith("." + t) for t in targets)}
    if covered != adapted:
        raise ValueError(f"{file}: target_modules={targets} do not adapt all the modules the model's "
                         f"lora_targets={list(cfg.lora_targets)} adapt: {sorted(adapted - covered)[:5]}")


def _read_adapter_tensors(file: Path) -> dict[str, np.ndarray]:
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{file} is not a readable safetensors file: {error}") from error
    # peft names the adapter in memory (lora_A.default.weight) and older versions wrote it; a saved head may carry
    # its wrapper's path (classifier.modules_to_save.default.weight)
    return {re.sub(r"\.modules_to_save\.[^.]+\.", ".", re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", k)): v
            for k, v in tensors.items()}


def load_adapter(model: nn.Module, params: dict, folder: str | Path) -> dict:
    """`params` with its LoRA adapters replaced by the ones of a peft adapter folder (`adapter_config.json` +
    `adapter_model.safetensors`, as `save_pretrained` of a `peft.PeftModel` writes), and the head too when the folder
    holds it (peft's classifiers save theirs).

    Raises:
      FileNotFoundError: a file is missing. ValueError naming the file: not LoRA, r / lora_alpha / target_modules
      that differ from the model's config, a LoRA variant zoo does not compute (rslora, DoRA, per-module ranks), a
      corrupt file, or missing, unexpected or misshapen tensors.
    """
    folder = Path(folder)
    for file in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / file).exists():
            raise FileNotFoundError(f"{folder / file} not found: a peft adapter folder holds {ADAPTER_CONFIG} and "
                                    f"{ADAPTER_WEIGHTS}")
    cfg = model.config
    flat = flatten(_params_tree(params))
    shapes = {path: v.shape for path, v in flat.items() if _is_adapter(path)}
    if not shapes:
        raise ValueError(f"the params have no LoRA adapters for {folder / ADAPTER_CONFIG} (create the model with "
                         "lora_rank > 0 and the lora_targets of its target_modules)")
    modules = _adapter_modules(model, shapes)
    _check_adapter_config(model, modules, folder / ADAPTER_CONFIG)
    file = folder / ADAPTER_WEIGHTS
    tensors = _read_adapter_tensors(file)
    read, loaded = set(), {}
    for path, names in modules.items():
        kind = "A" if path.split("/")[-1].startswith("lora_a_") else "B"
        layer_shape = shapes[path][1:] if _stacked(path, cfg) else shapes[path]
        layers = []
        for name in names:
            key = f"{PEFT_PREFIX}{name}.lora_{kind}.weight"
            if key not in tensors:
                raise ValueError(f"{file} lacks {key} (zoo's {path})")
            # peft's lora_A [r, in], lora_B [out, r]
            expected = ((layer_shape[-1], math.prod(layer_shape[:-1])) if kind == "A"
                        else (math.prod(layer_shape[1:]), layer_shape[0]))
            if tensors[key].shape != expected:
                raise ValueError(f"{file}: {key} has shape {tuple(tensors[key].shape)}, zoo's {path} "
                                 f"{layer_shape} needs {expected}")
            layers.append(tensors[key].T.reshape(layer_shape))
            read.add(key)
        loaded[path] = jnp.asarray(np.stack(layers) if _stacked(path, cfg) else layers[0], flat[path].dtype)
    for path, tensor in _head_tensors(model).items():
        keys = [f"{PEFT_PREFIX}{name}" for name in _public_names(model, tensor)]
        if all(key in tensors for key in keys):
            shape = flat[path].shape
            if any(tensors[key].shape != tensor.public_shape(shape) for key in keys):
                raise ValueError(f"{file}: {keys[0]} has shape {tuple(tensors[keys[0]].shape)}, zoo's {path} "
                                 f"needs {tensor.public_shape(shape)}")
            parts = tensor.zoo_parts([tensors[k] for k in keys], shape)
            value = parts[0] if len(parts) == 1 else np.stack(parts, axis=tensor.rows)
            loaded[path] = jnp.asarray(value, flat[path].dtype)
            read.update(keys)
    unexpected = sorted(set(tensors) - read)
    if unexpected:
        raise ValueError(f"{file} has tensors the model has no adapter for: {', '.join(unexpected[:5])}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    new = unflatten({**flat, **loaded})
    return {"params": new} if "params" in params and len(params) == 1 else new
