"""The logical axis names that every weight and activation carries, as constants: a misspelt name is an import error,
not a weight silently left replicated. `train/partitioning.py` maps them onto the (data, fsdp, tensor) mesh."""

BATCH = "batch"  # rows of a batch
LENGTH = "length"  # positions of a sequence (queries or keys)
EMBED = "embed"  # the model width (hidden_size, or ALBERT's embedding_size)
VOCAB = "vocab"  # the token vocabulary
HEADS = "heads"  # attention heads
HEAD_DIM = "head_dim"  # the width of one head
MLP = "mlp"  # the feed-forward's inner width (intermediate_size)
LAYERS = "layers"  # the stacked layers of a scanned stack
