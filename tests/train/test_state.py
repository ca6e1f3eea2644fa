"""The training state and its checkpoint: one schema, and a broken checkpoint (truncated,
foreign, not this model's) reported once, set aside, and never in the way of the next run."""

import json
import math

import pytest
import torch
from helpers.training import counting_batch, run, tiny, val_loss

from gptpipe.config import PretrainConfig
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss
from gptpipe.train.state import STATE_JSON, STATE_TENSORS, TrainState, read_checkpoint_state


def cfg(**kw) -> PretrainConfig:
    base = dict(max_steps=10, batch_size=8, warmup_steps=2, eval_interval=5, eval_batches=1)
    base |= dict(log_interval=5, checkpoint_interval=2, dtype="float32", learning_rate=3e-3)
    return PretrainConfig(**(base | kw))


def crash_at(step: int):
    def batch_at(i: int):
        if i == step:
            raise RuntimeError("crash")
        return counting_batch(i)

    return batch_at


def interrupted(ckpt, config, at=5):
    """Train until micro-batch `at` crashes the run, leaving the periodic checkpoint."""
    with pytest.raises(RuntimeError, match="crash"):
        train(
            tiny(),
            config,
            batch_at=crash_at(at),
            loss_of=lm_loss,
            validate=val_loss,
            checkpoint_dir=ckpt,
        )
    assert read_checkpoint_state(ckpt)["step"] == 4


def test_the_json_of_a_checkpoint_is_the_train_state_fields(tmp_path):
    ckpt = tmp_path / "ckpt"
    interrupted(ckpt, cfg())
    raw = json.loads((ckpt / STATE_JSON).read_text())
    loop_fields = set(TrainState().to_json())
    assert loop_fields <= set(raw)
    assert set(raw) - loop_fields == {"version", "fingerprint", "param_groups"}
    state = TrainState.from_json(raw)
    assert state.step == 4 and state.tokens == 4 * 8 * 16 and state.best_val_loss == math.inf
    assert len(state.window_losses) == 4 and state.train_rows == []


@pytest.fixture(scope="module")
def reference():
    """The weights of an uninterrupted run of `cfg()`, with no checkpoint anywhere (on one
    thread, as the tests: module fixtures run before the autouse one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = tiny()
    run(model, cfg())
    torch.set_num_threads(before)
    return model.state_dict()


@pytest.mark.parametrize(
    "damage",
    [
        "truncated tensors",
        "truncated json",
        "foreign json",
        "another model",
        "only json",
    ],
)
def test_a_broken_checkpoint_is_set_aside_in_one_line_and_the_run_starts_fresh(
    tmp_path, capsys, damage, reference
):
    config = cfg()
    ckpt = tmp_path / "ckpt"
    interrupted(ckpt, config)
    tensors, meta = ckpt / STATE_TENSORS, ckpt / STATE_JSON
    if damage == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:-100])
    elif damage == "truncated json":
        meta.write_text(meta.read_text()[:50])
    elif damage == "foreign json":
        meta.write_text(json.dumps({"version": 1, "step": 4, "best": {}}))
    elif damage == "another model":  # same fingerprint, tensors of another shape
        from safetensors.torch import load_file, save_file

        state = load_file(str(tensors))
        state["model.wpe.weight"] = torch.zeros(3, 3)
        save_file(state, str(tensors))
    else:
        tensors.unlink()
    capsys.readouterr()

    model = tiny()
    result = run(model, config, checkpoint_dir=ckpt)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "unusable" in line]
    assert len(lines) == 1, err
    assert str(ckpt) in lines[0] and "starting fresh" in lines[0]
    assert result.resumed_from == 0 and result.steps == 10
    aside = list(tmp_path.glob("ckpt.broken-*"))
    assert len(aside) == 1 and aside[0].is_dir()
    # fresh means fresh: the same weights as a run that never saw the broken checkpoint
    for (name, a), b in zip(reference.items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if damage != "truncated tensors":
        return
    # and the next run does not trip over it again
    interrupted(ckpt, config)
    assert run(tiny(), config, checkpoint_dir=ckpt).resumed_from == 4
    assert "unusable" not in capsys.readouterr().err


def test_a_broken_checkpoint_with_a_complete_previous_one_resumes_from_that(
    tmp_path, capsys, reference
):
    """A kill -9 inside a checkpoint replacement can leave the old folder beside the new one;
    when the new one is broken, the run goes on from the old one, and says so."""
    config = cfg()
    ckpt = tmp_path / "ckpt"
    interrupted(ckpt, config)
    previous = tmp_path / ".ckpt.old-12345"
    ckpt.rename(previous)
    ckpt.mkdir()
    (ckpt / STATE_JSON).write_text("{")  # the new one, cut short
    capsys.readouterr()

    resumed = tiny(seed=7)
    result = run(resumed, config, checkpoint_dir=ckpt)
    err = " ".join(capsys.readouterr().err.split())
    assert "unusable" in err and "trying the previous one" in err
    assert "resuming from the checkpoint at step 4" in err
    assert result.resumed_from == 4 and not previous.exists()
    for (name, a), b in zip(reference.items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
