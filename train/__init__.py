"""zoo's training side: optimizer, losses, sharded train step, loop, checkpoints and data (`python -m train`)."""
