"""What a family is: one record per family, written down here so nothing about a family is found by probing.

A family file (`zoo/families/<name>.py`) builds one `Family`: its config builder and presets, the heads it supports,
and, when it has one, the public checkpoint format `transformers` reads and writes (`PublicFormat`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import flax.linen as nn

from zoo.config import Config
from zoo.families.mapping import PublicConfig

Task = Optional[str]  # a key of the model's head table (zoo.heads.HEADS, ENCODER_DECODER_HEADS); None: bare


def no_computed_tensors(cfg: Config) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class PublicFormat:
    """A public checkpoint layout (a `config.json` + safetensors folder), both ways.

    Attributes:
      model_type: config.json's `model_type`.
      prefix: the body's tensor-name prefix in the task architectures (`bert.`); a bare model's file has none.
      architectures: config.json's `architectures` name -> the zoo task it is (None: the bare model).
      config_from_public: (config.json reader, task) -> Config; a field zoo cannot honour is a ValueError naming it.
      config_to_public: Config -> config.json fields.
      tensors: (Config, task) -> a tree like the params whose leaves are `mapping.Tensor`s (the public names).
      ignored: regexes of tensors a file may hold that zoo neither reads nor needs (buffers, tied copies).
      computed: Config -> {name: array} of tensors the format stores but zoo computes (e.g. sinusoid tables).
    """

    model_type: str
    prefix: str
    architectures: Mapping[str, Task]
    config_from_public: Callable[[PublicConfig, Task], Config]
    config_to_public: Callable[[Config], dict]
    tensors: Callable[[Config, Task], dict]
    ignored: tuple[str, ...] = ()
    computed: Callable[[Config], dict] = no_computed_tensors

    def architecture(self, task: Task) -> Optional[str]:
        """The architecture name of `task`, or None when the format has none for it."""
        return next((name for name, t in self.architectures.items() if t == task), None)


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
      name: `Config.family` of its configs.
      model: the module its configs build (`Transformer` or `EncoderDecoderTransformer`), called `model(cfg, task)`.
      config: the config builder: `bert(**fields) -> Config` holds the family's switches, presets add the sizes.
      presets: preset name -> Config.
      tasks: the tasks (heads) its models support; None is the bare model.
      public: its public checkpoint format, or None when it has none.
    """

    name: str
    model: type[nn.Module]
    config: Callable[..., Config]
    presets: Mapping[str, Config]
    tasks: tuple[Task, ...]
    public: Optional[PublicFormat] = None
