"""Test helpers shared across test folders: the data mirror, tiny pipelines, GPT-2 fixtures."""
