"""The vocabulary every family mapping is written in: how one zoo parameter is made of public tensors, and how a
public `config.json` is read field by field so that nothing zoo cannot honour passes unnoticed."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

# torch's Linear stores [out, in]; zoo kernels are [in, out]. GPT-2's Conv1D already stores [in, out].
# Public activation names (transformers' ACT2FN) and the zoo activation each computes.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
               "swish": "swish", "silu": "swish"}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A zoo parameter made of `len(names)` public tensors.

    Each public tensor, transposed when `transpose` (torch Linear weights), is stacked on its last axis with the others
    and reshaped to the zoo shape, whose first `rows` axes are the public matrix's rows (0: the public tensor is a
    vector). So BERT's query/key/value weights, three [E, E], become zoo's fused qkv kernel [E, 3, heads, head_dim],
    and GPT-2's c_attn [E, 3E] the same kernel with no transpose. `lead` are public leading axes of size 1 (Marian's
    final_logits_bias is [1, vocab]).
    """

    names: tuple[str, ...]
    rows: int = 0
    transpose: bool = False
    lead: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()  # more names the public format stores the same tensor under: written, not read

    def public_shape(self, shape: tuple) -> tuple:
        """The shape each public tensor has when the zoo parameter has `shape`."""
        rows = math.prod(shape[:self.rows])
        cols = math.prod(shape) // (rows * len(self.names))
        matrix = (rows, cols) if self.rows else (cols,)
        return self.lead + (matrix[::-1] if self.transpose else matrix)

    def zoo_parts(self, arrays: list[np.ndarray], shape: tuple) -> list[np.ndarray]:
        """Each public tensor in zoo's layout, as a view where numpy can (a transpose and a split of axes are views):
        `shape`, less its axis `rows` when several tensors are stacked there (BERT's q, k, v: [E, heads, head_dim]
        each of the fused [E, 3, heads, head_dim])."""
        part_shape = shape if len(self.names) == 1 else shape[:self.rows] + shape[self.rows + 1:]
        parts = [a.reshape(a.shape[len(self.lead):]) for a in arrays]
        return [(p.T if self.transpose else p).reshape(part_shape) for p in parts]

    def to_public(self, x: np.ndarray) -> list[np.ndarray]:
        n = len(self.names)
        if self.rows:
            stacked = x.reshape(math.prod(x.shape[:self.rows]), n, -1)  # [rows, n, cols]
            parts = [stacked[:, i] for i in range(n)]
        else:
            parts = list(x.reshape(n, -1))
        parts = [p.T if self.transpose else p for p in parts]
        return [np.ascontiguousarray(p.reshape(self.lead + p.shape)) for p in parts]

    def public(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> public tensor, aliases included."""
        tensors = dict(zip(self.names, self.to_public(x)))
        return {**tensors, **{alias: tensors[self.names[0]] for alias in self.aliases}}


def linear(prefix: str, rows: int = 1) -> dict:
    """A torch `nn.Linear` named `prefix`; `rows` zoo axes are its input (2 for attention's out: [heads, dim, E])."""
    return {"kernel": Tensor((f"{prefix}.weight",), rows, transpose=True), "bias": Tensor((f"{prefix}.bias",))}


def fused_linear(prefixes: list[str]) -> dict:
    """Several torch Linears of the same input fused into one zoo kernel (q/k/v into `qkv`, k/v into `key_value`)."""
    return {"kernel": Tensor(tuple(f"{p}.weight" for p in prefixes), 1, transpose=True),
            "bias": Tensor(tuple(f"{p}.bias" for p in prefixes))}


def conv1d(prefix: str, rows: int = 1) -> dict:
    """GPT-2's `Conv1D`: a Linear whose weight is stored [in, out]."""
    return {"kernel": Tensor((f"{prefix}.weight",), rows), "bias": Tensor((f"{prefix}.bias",))}


def layer_norm(prefix: str) -> dict:
    return {"scale": Tensor((f"{prefix}.weight",)), "bias": Tensor((f"{prefix}.bias",))}


def embedding(name: str) -> dict:
    return {"embedding": Tensor((name,), 1)}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": x}} -> {"a/b": x}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        flat.update(flatten(value, f"{path}/") if isinstance(value, dict) else {path: value})
    return flat


def unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


# Fields of any config.json that say nothing about the computation zoo does (bookkeeping, generation defaults).
BOOKKEEPING = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "use_cache",
    "id2label", "label2id", "num_labels", "_num_labels", "problem_type", "output_attentions", "output_hidden_states",
    "return_dict", "tokenizer_class", "gradient_checkpointing", "chunk_size_feed_forward", "initializer_range",
    "max_length", "min_length", "num_beams", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
    "length_penalty", "early_stopping", "no_repeat_ngram_size", "num_return_sequences", "task_specific_params",
    "is_encoder_decoder", "sep_token_id", "cls_token_id", "prefix",
})


class PublicConfig:
    """Reads a `config.json` dict; every field read is recorded so the unread ones can be reported."""

    def __init__(self, fields: dict):
        self.fields = fields
        self.read = set(BOOKKEEPING)

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value (None when written as null), or `default` when the file does not have it."""
        self.read.add(name)
        return self.fields.get(name, default)

    def require(self, name: str, *allowed: Any) -> None:
        """A ValueError naming the field unless it is absent or one of `allowed` (the first is the default)."""
        value = self.get(name, allowed[0])
        if value not in allowed:
            raise ValueError(f"config.json field {name}={value!r} is not supported by zoo (supported: "
                             f"{', '.join(repr(a) for a in allowed)})")

    def same(self, *names: str, default: Any = None) -> Any:
        """The value several public fields must share because zoo has one field for them."""
        values = {name: self.get(name) for name in names if self.get(name) is not None}
        if len(set(values.values())) > 1:
            raise ValueError(f"config.json fields {values} differ; zoo needs them equal")
        return next(iter(values.values()), default)

    def activation(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if value not in ACTIVATIONS:
            raise ValueError(f"config.json field {name}={value!r} is not supported by zoo (supported: "
                             f"{', '.join(ACTIVATIONS)})")
        return ACTIVATIONS[value]

    def num_labels(self) -> int:
        id2label = self.fields.get("id2label")
        return len(id2label) if id2label else self.fields.get("num_labels", 2)

    def label_names(self) -> tuple[str, ...]:
        """id2label's names by id, or () when they are transformers' defaults (LABEL_0, LABEL_1, ...)."""
        id2label = self.fields.get("id2label") or {}
        names = tuple(id2label[key] for key in sorted(id2label, key=int))
        return () if names == tuple(f"LABEL_{i}" for i in range(len(names))) else names

    def unread(self) -> list[str]:
        return sorted(set(self.fields) - self.read)


def public_activation(zoo_activation: str) -> str:
    return {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "swish": "swish"}[zoo_activation]

