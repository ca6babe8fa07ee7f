"""zoo: BERT, GPT, ALBERT and the encoder-decoder Transformer as Flax linen modules over one set of blocks."""

from zoo.config import Config
from zoo.models import EncoderDecoderTransformer, ModelOutput, Transformer
from zoo.registry import create, embed, extend_positions, get_config, init_cache, list_models, param_count, tasks
from zoo.checkpoints import from_pretrained, load_adapter, save_adapter, save_pretrained
from zoo.generate import GenerateOutput, generate
from zoo.lora import merge_lora

__all__ = ["Config", "EncoderDecoderTransformer", "GenerateOutput", "ModelOutput", "Transformer", "create", "embed",
           "extend_positions", "from_pretrained", "generate", "get_config", "init_cache", "list_models", "load_adapter",
           "merge_lora", "param_count", "save_adapter", "save_pretrained", "tasks"]
