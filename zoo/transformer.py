"""The Transformer of Vaswani et al. (2017): post-LN encoder and decoder with cross-attention, sinusoidal positions,
and one embedding shared by source, target and output projection, scaled by sqrt(d_model)."""

from zoo.config import Config
from zoo.models import EncoderDecoderTransformer

MODEL = EncoderDecoderTransformer
TASKS = (None, "seq2seq")


def transformer(**fields) -> Config:
    return Config(family="transformer", norm_position="post", position_embedding="sinusoidal",
                  scale_embeddings=True, pooling="none", activation="relu", layer_norm_eps=1e-6,
                  attention_dropout_rate=0.0, **fields)


PRESETS = {
    # 37k shared BPE vocabulary of the WMT'14 en-de experiments
    "transformer-base": transformer(vocab_size=37000, hidden_size=512, num_layers=6, num_decoder_layers=6,
                                    num_heads=8, intermediate_size=2048, max_length=1024, dropout_rate=0.1,
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    "transformer-big": transformer(vocab_size=37000, hidden_size=1024, num_layers=6, num_decoder_layers=6,
                                   num_heads=16, intermediate_size=4096, max_length=1024, dropout_rate=0.3,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    "transformer-tiny": transformer(vocab_size=1024, hidden_size=64, num_layers=2, num_decoder_layers=2,
                                    num_heads=4, intermediate_size=128, max_length=128, pad_token_id=0,
                                    eos_token_id=1, decoder_start_token_id=0),
}
