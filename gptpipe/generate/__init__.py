"""Generation: the decoding loop, sampling rules, beam search, streamed text.

`gptpipe.generate.generate_text(model_folder, prompt, **settings)` is the one call a notebook
needs (imported on first use, so that importing a submodule stays light).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("generate_text", "Decoding"):
        from gptpipe.generate import decode, text

        return getattr(text if name == "generate_text" else decode, name)
    raise AttributeError(f"module 'gptpipe.generate' has no attribute {name!r}")
