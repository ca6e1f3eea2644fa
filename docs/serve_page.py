"""Make docs/serve-page.png: the chat page mid-conversation, in a headless Chromium.

Random weights answer gibberish, so the picture's model is a toy byte-level one trained here
(a minute on a laptop CPU) to know two answers by heart. It drives the page with the same
helpers as tests/serve/test_page.py. Run from the repository root:

    .venv/bin/python docs/serve_page.py            # writes docs/serve-page.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "serve")]

from helpers.browser import headless_chromium, set_viewport  # noqa: E402
from helpers.server import serving  # noqa: E402
from helpers.tiny import byte_tokenizer  # noqa: E402
from test_page import SIZE, Page  # noqa: E402

from gptpipe.config import PretrainConfig  # noqa: E402
from gptpipe.model.folder import save_model  # noqa: E402
from gptpipe.model.gpt import GPT, GPTConfig  # noqa: E402
from gptpipe.train.loop import train  # noqa: E402
from gptpipe.train.losses import lm_loss  # noqa: E402

TURNS = [
    (
        "What does gptpipe do?",
        "It runs a GPT pipeline, from raw text to a fine-tuned model, with every step a "
        "cached DVC stage.",
    ),
    (
        "How do I chat with a model?",
        "Run gptpipe serve --model models/instruct, then open http://127.0.0.1:8000/ in a browser.",
    ),
]
TYPED = "And how do I stop an answer?"
EOT = 256  # the byte tokenizer's <|endoftext|>
BLOCK = 128


def toy_model(steps: int = 600) -> GPT:
    """A 2-layer byte-level model that answers TURNS' questions with their answers."""
    texts = [f"{q}\n{a}" for q, a in TURNS] + ["\n".join(f"{q}\n{a}" for q, a in TURNS)]
    docs = [[*text.encode(), EOT] for text in texts]
    data = torch.tensor([t for _ in range(30) for doc in docs for t in [EOT, *doc]])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=BLOCK, n_layer=2, n_head=4, n_embd=96))

    def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(data) - BLOCK - 1, (8, 1), generator=torch.manual_seed(i))
        rows = data[starts + torch.arange(BLOCK + 1)]
        return rows[:, :-1], rows[:, 1:]

    def validate(net: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": float(net(*batch_at(-1))[1])}

    config = PretrainConfig(
        max_steps=steps, batch_size=8, learning_rate=3e-3, min_lr=3e-4, warmup_steps=20,
        eval_interval=steps, eval_batches=1, log_interval=100, checkpoint_interval=0,
        dtype="float32", threads=1,
    )  # fmt: skip
    train(model, config, batch_at=batch_at, loss_of=lm_loss, validate=validate)
    return model.eval()


def main(out: Path = ROOT / "docs" / "serve-page.png") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_model(root / "toy", toy_model(), byte_tokenizer(root / "bytes"))
        with headless_chromium(root / "profile") as driver, serving("--model", root / "toy") as s:
            set_viewport(driver, *SIZE)
            page = Page(driver).open(s.url)
            page.wait(page.models, "models")
            page.set("temperature", "0")
            for question, answer in TURNS:
                said = page.ask(question)
                if said != answer:
                    sys.exit(f"the toy model answered {said!r}, not {answer!r}: train longer")
            page.type(TYPED)
            driver.save_screenshot(str(out))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
