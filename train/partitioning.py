"""The device mesh and the one table that maps the models' logical axis names onto it.

Models name their axes (zoo/); only this file knows the mesh. Changing a parallelism strategy is an edit to RULES.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoo import axes

MESH_AXES = ("data", "fsdp", "tensor")

# Flax resolves each logical name to the first rule whose mesh axes this array does not use yet, so activations'
# `embed` stays unsharded when `batch` already took `fsdp`.
RULES = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.VOCAB, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.MLP, "tensor"),
    (axes.EMBED, "fsdp"),
    (axes.HEAD_DIM, None),
    (axes.LENGTH, None),
    (axes.LAYERS, None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all); one size may be -1 to take what is left.

    Raises ValueError when the sizes do not multiply to the device count.
    """
    devices = jax.devices() if devices is None else devices
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if known < 1 or len(devices) % known:
            raise ValueError(f"mesh data={data}, fsdp={fsdp}, tensor={tensor} does not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {int(np.prod(sizes))} "
                         f"devices, but there are {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_shardings(boxed_tree, mesh: Mesh, rules=RULES):
    """NamedShardings for a tree whose leaves carry logical names (flax `LogicallyPartitioned`); unnamed: replicated.

    A box around nothing (optax's `MaskedNode`: a frozen parameter's absent optimizer state, which the optimizer made
    by mapping over the boxed parameters) stays nothing."""
    def sharding(leaf):
        if isinstance(leaf, nn.Partitioned) and not jax.tree.leaves(leaf.unbox()):
            return leaf.unbox()
        names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else ()
        return NamedSharding(mesh, nn.logical_to_mesh_axes(names, rules))

    return jax.tree.map(sharding, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, rules=RULES) -> NamedSharding:
    """Rows of a batch split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(*nn.logical_to_mesh_axes((axes.BATCH,), rules)))
