"""What only a CUDA GPU can show: a whole training run on it in float16 (gradient scaler,
checkpoint and exact resume), its checkpoint's CUDA RNG state, `dtype: auto` and device
names resolved there.

Skipped without a GPU; their CPU counterparts are tests/train/test_loop.py (float16 with a
checkpointed scaler, bf16 on the CPU) and tests/test_runtime.py (device names).
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from device_cases import NO_CUDA
from helpers.training import FIXED_VAL, cfg, counting_batch, tiny
from safetensors.torch import load_file

from gptpipe.errors import BadInput
from gptpipe.runtime import native_bf16, resolve_device, resolve_dtype
from gptpipe.train.distributed import Placement
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss
from gptpipe.train.state import STATE_TENSORS, read_checkpoint_state

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
CUDA = torch.device("cuda")


def val_loss(model: torch.nn.Module) -> dict[str, float]:
    """helpers.training's validation, its fixed batches moved to the GPU."""
    losses = [float(model(x.to(CUDA), y.to(CUDA))[1]) for x, y in FIXED_VAL]
    return {"val_loss": sum(losses) / len(losses)}


def run(model: torch.nn.Module, config, **options):
    return train(
        model, config, batch_at=counting_batch, loss_of=lm_loss, validate=val_loss, **options
    )


def test_float16_run_on_cuda_checkpoints_its_scaler_and_resumes_exactly(tmp_path):
    """A float16 run on the GPU is interrupted (SIGTERM) after step 5; its checkpoint holds
    the gradient scaler's state and the CUDA RNG state, and the resumed run ends with the
    weights of the uninterrupted one (to float rounding: CUDA's attention and embedding
    backward may accumulate in another order from run to run)."""
    config = cfg(max_steps=8, dtype="float16", device="cuda", eval_interval=4)
    reference = tiny().to(CUDA)
    assert run(reference, config).steps == 8

    def interrupting(i):
        if i == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return counting_batch(i)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny().to(CUDA),
            config,
            batch_at=interrupting,
            loss_of=lm_loss,
            validate=val_loss,
            checkpoint_dir=ckpt,
        )
    state = read_checkpoint_state(ckpt)
    assert state is not None and state["scaler"]["scale"] > 0
    assert "rng.cuda.0" in load_file(str(ckpt / STATE_TENSORS))
    resumed = tiny(seed=3).to(CUDA)
    assert run(resumed, config, checkpoint_dir=ckpt).resumed_from == 5
    for (name, a), b in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


def test_auto_dtype_is_bfloat16_on_gpus_that_compute_it():
    """`dtype: auto` trains in bf16 on Ampere and later (compute capability 8+), float32 on
    older GPUs; Placement resolves it once per run."""
    major, _ = torch.cuda.get_device_capability(CUDA)
    expected = "bfloat16" if major >= 8 else "float32"
    assert native_bf16(CUDA) is (major >= 8)
    assert resolve_dtype("auto", CUDA) == expected
    assert Placement.of(cfg(dtype="auto"), CUDA).dtype == expected


def test_cuda_device_names_resolve_and_a_missing_index_is_bad_input():
    assert resolve_device("auto", "--device").type == "cuda"
    assert resolve_device("cuda:0", "--device") == torch.device("cuda", 0)
    with pytest.raises(BadInput, match="--device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}", "--device")
