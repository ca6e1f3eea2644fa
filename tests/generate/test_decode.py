"""Generation: greedy is argmax, sampling is seeded, stop token and context cropping."""

import torch

from gptpipe.generate.decode import generate
from gptpipe.model.gpt import GPT, GPTConfig


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()


def test_greedy_is_repeated_argmax_and_crops_context():
    model = tiny()
    out = generate(model, [1, 2, 3], max_new_tokens=12)
    assert len(out) == 12
    ids = [1, 2, 3]
    for _ in range(12):
        logits, _ = model(torch.tensor([ids[-8:]]))
        ids.append(int(logits[0, -1].argmax()))
    assert out == ids[3:]


def test_sampling_is_reproducible_with_a_seeded_generator_and_respects_top_k():
    model = tiny()

    def run(seed: int, top_k: int = 0) -> list[int]:
        return generate(
            model,
            [1],
            20,
            temperature=1.0,
            top_k=top_k,
            generator=torch.Generator().manual_seed(seed),
        )

    assert run(1) == run(1)
    assert run(1) != run(2)
    logits, _ = model(torch.tensor([[1]]))
    top1 = int(logits[0, -1].argmax())
    assert run(3, top_k=1)[0] == top1  # top-1 sampling is greedy


def test_stops_at_the_stop_token():
    model = tiny()
    greedy = generate(model, [1, 2], 10)
    stop = greedy[3]
    out = generate(model, [1, 2], 10, stop_id=stop)
    assert out == greedy[: greedy.index(stop)]
