"""BERT (Devlin et al., 2019): a bidirectional post-LN encoder pre-trained with masked LM and next-sentence prediction."""

from zoo.config import Config
from zoo.models import ENCODER_TASKS, Transformer

MODEL = Transformer
TASKS = (None, *ENCODER_TASKS)


def bert(**fields) -> Config:
    return Config(family="bert", norm_position="post", position_embedding="learned", type_vocab_size=2,
                  embedding_norm=True, pooling="cls", activation="gelu", layer_norm_eps=1e-12, **fields)


PRESETS = {
    "bert-base-uncased": bert(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                              intermediate_size=3072, max_length=512),
    "bert-large-uncased": bert(vocab_size=30522, hidden_size=1024, num_layers=24, num_heads=16,
                               intermediate_size=4096, max_length=512),
    "bert-tiny": bert(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                      max_length=128),
}
