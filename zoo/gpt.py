"""GPT-2 (Radford et al., 2019): a causal pre-LN decoder with a final LayerNorm and an LM head tied to the input."""

from zoo.config import Config
from zoo.models import Transformer

MODEL = Transformer
TASKS = (None, "causal_lm")


def gpt(**fields) -> Config:
    return Config(family="gpt", norm_position="pre", position_embedding="learned", causal=True, final_norm=True,
                  pooling="none", activation="gelu_tanh", layer_norm_eps=1e-5, **fields)


PRESETS = {
    "gpt2": gpt(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                max_length=1024, bos_token_id=50256, eos_token_id=50256),
    "gpt2-medium": gpt(vocab_size=50257, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                       max_length=1024, bos_token_id=50256, eos_token_id=50256),
    "gpt-tiny": gpt(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                    max_length=128, bos_token_id=1, eos_token_id=1),
}
