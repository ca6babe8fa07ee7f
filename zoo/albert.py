"""ALBERT (Lan et al., 2020): BERT with a factorized embedding, one layer shared by all depths, and sentence-order
prediction in place of next-sentence prediction (same head, other labels)."""

from zoo.config import Config
from zoo.models import ENCODER_TASKS, Transformer

MODEL = Transformer
TASKS = (None, *ENCODER_TASKS)


def albert(**fields) -> Config:
    return Config(family="albert", norm_position="post", position_embedding="learned", type_vocab_size=2,
                  embedding_norm=True, pooling="cls", activation="gelu_tanh", layer_norm_eps=1e-12,
                  embedding_size=128, share_layers=True, dropout_rate=0.0, attention_dropout_rate=0.0,
                  classifier_dropout_rate=0.1, **fields)


PRESETS = {
    "albert-base-v2": albert(vocab_size=30000, hidden_size=768, num_layers=12, num_heads=12,
                             intermediate_size=3072, max_length=512),
    "albert-large-v2": albert(vocab_size=30000, hidden_size=1024, num_layers=24, num_heads=16,
                              intermediate_size=4096, max_length=512),
    "albert-tiny": albert(vocab_size=1024, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128,
                          max_length=128).replace(embedding_size=32),
}
