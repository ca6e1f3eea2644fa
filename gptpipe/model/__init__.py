"""The model: the GPT-2 decoder, its fused loss, heads, parameter counts, and model folders."""
