"""Tokenizers: folders of tiktoken ranks, the BPE trainer, special tokens."""
