"""The one training loop and its parts: optimizer, precision, checkpoints, ranks, losses, curves."""
