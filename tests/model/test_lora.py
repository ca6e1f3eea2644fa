"""LoRA on our own modules: the book's parameter count, merged = unmerged, only adapters train,
exact resume with adapters, and bad targets."""

import pytest
import torch

from gptpipe.config import ClassifyConfig, InstructConfig
from gptpipe.errors import ConfigError
from gptpipe.finetune.classify import collate_classify
from gptpipe.finetune.trainable import finished, select_trainable
from gptpipe.model.folder import load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.lora import LoRALinear, adapter_parameters, apply_lora, merge_lora
from gptpipe.tokenizer.folder import save_tokenizer
from gptpipe.train.loop import train
from gptpipe.train.losses import classify_loss
from gptpipe.train.state import read_checkpoint_state

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)
BOOK_TARGETS = ["c_attn", "c_proj", "c_fc", "head"]


def lora_cfg(**kw) -> ClassifyConfig:
    return ClassifyConfig(trainable="lora", lora_rank=4, lora_alpha=8.0, **({"epochs": 0.0} | kw))


def test_gpt2_124m_classifier_with_the_books_lora_has_2666528_trainable_parameters():
    with torch.device("meta"):
        model = GPT(GPTConfig(n_classes=2))  # GPT-2 124M: 12 x 768, 50,257 tokens
    counts = select_trainable(model, ClassifyConfig(trainable="lora", lora_targets=BOOK_TARGETS))
    assert counts["trainable_params"] == 2_666_528  # the book's figure (appendix E)
    assert counts["total_params"] == 124_441_346  # the book's 124M classifier
    assert adapter_parameters(model) == 2_666_528
    # Without the head among the targets, the new head trains whole instead (768 * 2 + 2).
    with torch.device("meta"):
        model = GPT(GPTConfig(n_classes=2))
    cfg = ClassifyConfig(trainable="lora", lora_targets=["c_attn", "c_proj", "c_fc"])
    counts = select_trainable(model, cfg)
    assert counts["trainable_params"] == 2_666_528 - 16 * (768 + 2) + 1538


def test_last_blocks_trains_the_head_the_last_k_blocks_and_the_final_norm():
    with torch.device("meta"):
        model = GPT(GPTConfig(n_classes=2))
    counts = select_trainable(model, ClassifyConfig(trainable="last_blocks", trainable_blocks=1))
    # A block: 12 C^2 weights (c_attn, c_proj, c_fc, mlp.c_proj), 9 C biases, ln_1 + ln_2 (4 C).
    block = 12 * 768 * 768 + 13 * 768
    assert block == 7_087_872
    assert counts["trainable_params"] == block + 2 * 768 + (768 * 2 + 2)  # + ln_f + the head
    trained = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith("h.")
    }
    assert trained == {"h.11"}
    with pytest.raises(ConfigError, match=r"classify\.trainable_blocks.*13 exceeds.*12 blocks"):
        select_trainable(model, ClassifyConfig(trainable="last_blocks", trainable_blocks=13))


def test_merged_and_unmerged_logits_agree_and_the_folder_is_a_plain_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        before, _ = model(x)
    apply_lora(model, ["c_attn", "c_proj", "c_fc"], rank=4, alpha=8.0)
    with torch.no_grad():
        assert torch.equal(model(x)[0], before)  # B = 0: an adapted model starts as the base
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.2)
        unmerged, _ = model(x)
    assert not torch.allclose(unmerged, before, atol=1e-3)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        merged, _ = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    save_tokenizer(tmp_path / "tok", {bytes([i]): i for i in range(63)}, "bpe", "gpt2")
    save_model(tmp_path / "m", model, tmp_path / "tok")
    loaded, _ = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], unmerged, atol=1e-5, rtol=1e-5)


def test_the_fused_query_key_value_projection_gets_one_adapter_per_projection():
    layer = torch.nn.Linear(8, 24)
    lora = LoRALinear(layer, rank=2, alpha=4.0, groups=3)
    lora.lora_B.data.normal_()
    delta = lora.delta_weight()
    for g in range(3):
        expected = 2.0 * lora.lora_B[g] @ lora.lora_A[g]
        torch.testing.assert_close(delta[8 * g : 8 * (g + 1)], expected)
    x = torch.randn(5, 8)
    torch.testing.assert_close(lora(x), layer(x) + x @ delta.T, atol=1e-5, rtol=1e-5)


def batches(n_layer: int = 2):
    gen = torch.Generator().manual_seed(1)
    data = [
        (
            torch.randint(
                0, 64, (int(torch.randint(2, 12, (1,), generator=gen)),), generator=gen
            ).tolist(),
            i % 2,
        )
        for i in range(32)
    ]

    def batch_at(i: int):
        start = (i * 8) % 32
        return collate_classify(data[start : start + 8], pad_id=63)

    return batch_at


def classifier() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**TINY, n_classes=2))


def test_only_adapters_and_the_new_head_train():
    model = classifier()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = lora_cfg(
        max_steps=4,
        batch_size=8,
        warmup_steps=1,
        eval_interval=4,
        lora_targets=["c_attn", "mlp.c_proj"],
        checkpoint_interval=0,
        learning_rate=1e-2,
        min_lr=1e-3,
    )
    counts = select_trainable(model, cfg)
    assert counts["trainable_params"] == 2 * (3 * 4 * (16 + 16) + 4 * (64 + 16)) + 2 * 16 + 2
    train(
        model, cfg, batch_at=batches(), loss_of=classify_loss, validate=lambda m: {"val_loss": 1.0}
    )
    finished(model)
    after = model.state_dict()
    assert after.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed == {
        "h.0.attn.c_attn.weight",
        "h.1.attn.c_attn.weight",
        "h.0.mlp.c_proj.weight",
        "h.1.mlp.c_proj.weight",
        "score.weight",
        "score.bias",
    }
    assert all(p.requires_grad for p in model.parameters())


def test_resume_from_a_training_checkpoint_with_adapters_is_exact(tmp_path):
    cfg = lora_cfg(
        max_steps=6,
        batch_size=8,
        warmup_steps=1,
        eval_interval=3,
        checkpoint_interval=2,
        learning_rate=1e-2,
        min_lr=1e-3,
        lora_dropout=0.1,
    )

    def run(checkpoints, stop_at=None):
        model = classifier()
        select_trainable(model, cfg)
        batch_at = batches()

        def maybe_stop(i: int):
            if i == stop_at:
                raise KeyboardInterrupt
            return batch_at(i)

        train(
            model,
            cfg,
            batch_at=maybe_stop,
            loss_of=classify_loss,
            validate=lambda m: {"val_loss": 1.0},
            checkpoint_dir=checkpoints,
        )
        return finished(model).state_dict()

    reference = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "ckpt", stop_at=5)  # dies in step 6, after the checkpoint of step 4
    assert read_checkpoint_state(tmp_path / "ckpt")["step"] == 4
    resumed = run(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), name


def test_lora_targets_that_name_no_module_are_config_errors():
    with pytest.raises(ConfigError, match=r"instruct\.lora_targets.*tied"):
        select_trainable(
            GPT(GPTConfig(**TINY)), InstructConfig(trainable="lora", lora_targets=["head"])
        )
    with pytest.raises(ConfigError, match=r"classify\.lora_targets.*unknown module 'q_proj'"):
        ClassifyConfig(lora_targets=["q_proj"])
    with pytest.raises(ConfigError, match=r"classify\.lora_targets.*must name a module"):
        ClassifyConfig(lora_targets=[])
    with pytest.raises(ConfigError, match=r"k\.t.*'head' names no module"):
        apply_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), ["head"], 2, 2.0, key="k.t")
