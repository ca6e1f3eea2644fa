"""gptpipe: a reproducible GPT pipeline, from raw text to a fine-tuned model."""

__version__ = "0.1.0"
