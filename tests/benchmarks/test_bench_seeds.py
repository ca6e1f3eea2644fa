"""bench_seeds: its held-out scoring is the pipeline's (every token once), its curve reading
finds the time to a training loss, and its quick mode runs every side (slow: minutes of CPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gptpipe.evaluation import perplexity
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.tokenizer.folder import save_bytes

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_seeds.py"
spec = importlib.util.spec_from_file_location("bench_seeds", BENCH)
assert spec and spec.loader
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_seeds"] = bench
spec.loader.exec_module(bench)


def test_heldout_score_matches_the_pipelines_perplexity_at_stride_block_size(tmp_path):
    """Consecutive windows, every token after the first predicted once, as the pipeline's
    sliding-window perplexity with stride = block_size - 1 (whose windows give at most
    block_size - 1 tokens of context, the benchmark's block_size)."""
    save_bytes(tmp_path / "tok")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tmp_path / "tok")
    ids = np.random.default_rng(0).integers(0, 256, 200)
    loss = bench.score("ours", tmp_path / "model", ids, tmp_path)
    expected = perplexity(model.eval(), ids, stride=15, batch_size=4, device="cpu")
    assert loss == pytest.approx(float(expected["mean_nll"]), rel=1e-3)
    assert expected["tokens"] == len(ids) - 1


def test_train_curve_gives_final_loss_and_time_to_3_5(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "seed001.yaml").write_text(
        json.dumps({"pretrain": {"batch_size": 2}, "model": {"block_size": 10}})
    )
    rows = (
        "step,train_loss,lr,tokens_per_s,grad_norm\n10,5.0,1,100,1\n20,3.4,1,200,1\n30,3.2,1,0,0\n"
    )
    (tmp_path / "plots" / "train.csv").write_text(rows)
    curve = bench.train_curve(tmp_path)
    # 10 steps x 20 tokens at 100 tok/s, then 10 x 20 at 200 tok/s
    assert curve == {
        "final_train_loss": 3.2,
        "reached_3_5": {"step": 20, "train_seconds": 3.0},
        "per_gpt2_token": 1.0,
    }
    # losses per our token, 1.1 of ours per GPT-2 token: 3.52 and 3.74 per GPT-2 token
    curve = bench.train_curve(tmp_path, per_gpt2_token=1.1)
    assert curve["final_train_loss"] == pytest.approx(3.52) and curve["reached_3_5"] is None


@pytest.mark.slow
def test_quick_mode_runs_both_sides_of_both_parts(tmp_path):
    pytest.importorskip("transformers")
    if bench.NANOGPT_GIT is None or not Path(bench.NANOGPT_GIT).is_dir():
        pytest.skip("no nanoGPT mirror (GPTPIPE_NANOGPT_GIT)")
    # parts a, s, b and e, with a reference beside them, and d (c, seed000, runs as its preset
    # test)
    argv = [
        "--quick",
        "--parts",
        "a,s,b,d,e",
        "--work",
        str(tmp_path),
        "--json",
        str(tmp_path / "r.json"),
        "--a-variant",
        "pretrain.batch_size=6",
        # a smoke run keeps its few steps whatever a variant sets
        "--a-variants",
        "pretrain.max_steps=1800,pretrain.checkpoint_interval=0",
        "--candidates",
        "preset;pretrain.learning_rate=0.003",
    ]
    results = bench.main(argv)
    a, b = results["seed003"], results["seed001"]
    assert a["nanogpt"]["seconds"] > 0 and a["ours"]["seconds"] > 0
    assert 0 < a["nanogpt"]["heldout_loss"] < 10 and 0 < a["ours"]["heldout_loss"] < 10
    first, second = a["variants"]  # the preset with the overrides, beside it in the same run
    expected = {"max_steps": 20, "eval_interval": 20, "batch_size": 6}
    assert first["overrides"]["pretrain"] == expected
    assert second["overrides"]["pretrain"] == {
        "max_steps": 20,
        "eval_interval": 20,
        "checkpoint_interval": 0,
    }
    assert a["variant"] in a["variants"]  # the one the table shows
    for variant in a["variants"]:
        assert variant["seconds"] > 0 and variant["time_ratio"] > 0
    select = results["seed001_select"]  # each candidate scored on the validation cut
    assert [c["overrides"] for c in select["candidates"]] == [
        {},
        {"pretrain": {"learning_rate": 0.003}},
    ]
    losses = [c["validation_loss"] for c in select["candidates"]]
    assert select["chosen"] == losses.index(min(losses)) and 0 < min(losses) < 12
    cut = select["cut"]
    assert cut["validation_chars"][1] == cut["heldout_chars"][0] == 54_000
    assert b["reference"]["heldout_loss"] > 0 and b["ours"]["heldout_loss"] > 0
    # part b trained the chosen settings and says where they were chosen
    assert b["selection"]["chosen"] == select["chosen"] and b["selection"]["matches_selection"]
    assert b["settings_chosen_on"].startswith("validation cut of the training text")
    assert b["margin"] == pytest.approx(4.75 - b["ours"]["heldout_loss"])
    assert "final_train_loss" in b["seed001_own_figure"]
    figure = results["seed001_figure"]  # the preset trained on, early stopping off
    assert figure["steps"] == 10 and figure["overrides"]["pretrain"]["patience"] == 0
    assert figure["final_train_loss"] > 0 and figure["per_gpt2_token"] >= 1
    step = results["seed003_step"]  # the step alone, ours and nanoGPT's in one process
    assert set(step["batches"]) == {"12", "6"}
    for times in step["batches"].values():
        assert times["ours_ms"] > 0 and times["nanogpt_ms"] > 0
        assert times["ratio"] == pytest.approx(times["ours_ms"] / times["nanogpt_ms"])
        # the Linear products alone, in the dtype the preset's `dtype: auto` computes in here
        assert times["floor_ms"] > 0 and times["floor_dtype"] in ("float32", "bfloat16")
        assert times["floor_ratio"] == pytest.approx(times["floor_ms"] / times["nanogpt_ms"])
    assert json.loads((tmp_path / "r.json").read_text())["quick"] is True


def test_the_validation_cut_is_the_training_texts_last_tenth_before_the_held_out_text(tmp_path):
    # numbered lines: every slice of the text is told apart from every other
    text = "".join(f"line {i:05d}\n" for i in range(2000))  # 22,000 characters
    train, held = bench.split(text, tmp_path, quick=False)
    fit, val = bench.validation_cut(train, tmp_path)
    train_text, held_text = train.read_text(), held.read_text()
    fit_text, val_text = fit.read_text(), val.read_text()
    assert (len(train_text), len(held_text)) == (19_800, 2_200)
    assert (len(fit_text), len(val_text)) == (17_820, 1_980)
    # the cut: inside the training text, at its end, and just before the held-out text
    assert fit_text + val_text == train_text and train_text + held_text == text
    assert text.index(val_text) == 17_820 and text.index(held_text) == 19_800
    assert not set(val_text.splitlines()) & set(held_text.splitlines())
    assert not set(fit_text.splitlines()) & set(held_text.splitlines())


def test_candidates_on_the_command_line_are_overrides_split_at_semicolons_and_commas():
    from gptpipe.errors import BadInput

    text = "pretrain.learning_rate=0.002, pretrain.weight_decay=1.0;preset;pretrain.eps=3.0e-6"
    assert bench.parse_candidates(text) == [
        {"pretrain": {"learning_rate": 0.002, "weight_decay": 1.0}},
        {},
        {"pretrain": {"eps": 3e-6}},
    ]
    with pytest.raises(BadInput, match="empty candidate"):
        bench.parse_candidates("pretrain.learning_rate=0.002;")
    with pytest.raises(BadInput, match=r"SECTION\.KEY=VALUE"):
        bench.parse_candidates("learning_rate=0.002")


def test_candidates_from_a_yaml_file_flat_nested_or_the_preset(tmp_path):
    from gptpipe.errors import BadInput

    path = tmp_path / "candidates.yaml"
    path.write_text(
        "- preset\n"
        "- {pretrain.learning_rate: 0.003, shard.val_fraction: 0.1}\n"
        "- pretrain: {weight_decay: 0.5}\n"
    )
    assert bench.read_candidates(path) == [
        {},
        {"pretrain": {"learning_rate": 0.003}, "shard": {"val_fraction": 0.1}},
        {"pretrain": {"weight_decay": 0.5}},
    ]
    path.write_text("pretrain.learning_rate: 0.003\n")
    with pytest.raises(BadInput, match="expected a list of candidates"):
        bench.read_candidates(path)
    path.write_text("- {learning_rate: 0.003}\n")
    with pytest.raises(BadInput, match=r"candidate 1: 'learning_rate' is not SECTION\.KEY"):
        bench.read_candidates(path)


def test_a_bad_candidate_exits_2_naming_the_option_and_key_before_any_training(capsys):
    cases = {
        "--candidates": "preset;pretrain.learnin_rate=0.003",
        "--a-variants": "pretrain.batch_size=-1",
    }
    for option, value in cases.items():
        with pytest.raises(SystemExit) as exit:
            bench.main([option, value, "--work", "/nonexistent/never-made"])
        assert exit.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"bench_seeds: {option}: ")
        assert ("learnin_rate" if option == "--candidates" else "batch_size") in line
    with pytest.raises(SystemExit) as exit:
        bench.main(["--parts", "a,x"])
    assert exit.value.code == 2 and "--parts: unknown part 'x'" in capsys.readouterr().err


def test_seeds_summarise_as_the_median_and_the_range():
    assert bench.summary([4.81, 4.70, 4.74]) == {"median": 4.74, "min": 4.70, "max": 4.81, "n": 3}
    assert bench.summary([4.7, 4.8]) == {
        "median": pytest.approx(4.75),
        "min": 4.7,
        "max": 4.8,
        "n": 2,
    }


def test_part_b_checks_it_trains_the_chosen_settings_whatever_the_seed():
    # a learning rate the preset does not have, whatever it has
    lr = 2 * bench.resolved_params("seed001", {})["pretrain"]["learning_rate"]
    chosen = bench.resolved_params("seed001", {"pretrain": {"learning_rate": lr}})
    reseeded = bench.reseeded({"pretrain": {"learning_rate": lr}}, 2, "seed001")
    assert reseeded["pretrain"]["seed"] == 1339
    assert bench._same_settings(bench.resolved_params("seed001", reseeded), chosen)
    assert not bench._same_settings(bench.resolved_params("seed001", {}), chosen)


def test_the_variant_shown_is_the_fastest_that_meets_the_target():
    def side(loss: float, ratio: float) -> dict:
        return {
            "heldout_loss": loss,
            "time_ratio": ratio,
            "meets_target": loss <= 1.886 and ratio <= 0.5,
        }

    assert bench.best_variant([side(1.80, 0.48), side(1.85, 0.44), side(1.90, 0.40)]) == 1
    # none meets it: the fastest within the loss target, else the lowest loss
    assert bench.best_variant([side(1.80, 0.55), side(1.85, 0.52), side(1.90, 0.40)]) == 1
    assert bench.best_variant([side(1.95, 0.40), side(1.89, 0.45)]) == 1


def test_overrides_are_params_values_over_a_copy_of_the_base():
    base = {"pretrain": {"max_steps": 20}}
    over = bench._overrides(["pretrain.batch_size=6", "shard.val_fraction=0.02"], base)
    assert over == {"pretrain": {"max_steps": 20, "batch_size": 6}, "shard": {"val_fraction": 0.02}}
    assert base == {"pretrain": {"max_steps": 20}}


def test_a_variant_gets_its_own_row_naming_what_it_changes():
    from benchmarks.table import seeds_rows

    side = {"seconds": 100.0, "heldout_loss": 1.9, "val_loss": 1.8}
    a = {
        "iterations": 2000,
        "nanogpt": {"seconds": 200.0, "heldout_loss": 1.89, "val_loss_own_estimate": 1.88},
        "ours": side,
        "time_ratio": 0.5,
        "meets_target": False,
        "variant": side
        | {
            "time_ratio": 0.45,
            "meets_target": False,
            "overrides": {"pretrain": {"max_steps": 2000, "batch_size": 6}},
        },
    }
    rows = seeds_rows({"seed003": a})
    assert [r.figure for r in rows][1] == "seed003 with pretrain.batch_size: 6 (same run)"
    assert rows[1].ratio == 0.45 and rows[1].met is False


def test_the_readme_seed_table_gives_a_variant_its_figures_and_its_command():
    from benchmarks.table import seeds_table

    side = {"seconds": 100.0, "heldout_loss": 1.9, "val_loss": 1.8}
    variant = {"seconds": 90.4, "heldout_loss": 1.8812, "time_ratio": 0.452, "meets_target": True}
    overrides = {"pretrain": {"max_steps": 2000, "batch_size": 6}, "shard": {"val_fraction": 0.02}}
    a = {
        "iterations": 2000,
        "repeats": 3,
        "nanogpt": {"seconds": 200.0, "heldout_loss": 1.89, "val_loss_own_estimate": 1.88},
        "ours": side,
        "time_ratio": 0.5,
        "meets_target": False,
        "variant": variant | {"overrides": overrides},
    }
    lines = seeds_table({"seeds": {"results": {"seed003": a}}}).splitlines()
    (row,) = [line for line in lines if line.startswith("| 003, same run |")]
    assert (
        "with pretrain.batch_size: 6, shard.val_fraction: 0.02: held-out loss 1.8812 in 90 s" in row
    )
    assert "(0.45x nanoGPT's time)" in row
    flags = "--repeats 3 --a-variant pretrain.batch_size=6 --a-variant shard.val_fraction=0.02"
    assert f'`python -m benchmarks.run_all --only seeds --with "seeds=--parts a {flags}"`' in row
    del a["variant"]
    assert "| 003, same run |" not in seeds_table({"seeds": {"results": {"seed003": a}}})


def test_the_step_alone_gets_a_row_per_batch_with_its_ratio():
    from benchmarks.table import seeds_rows

    batches = {
        "12": {"ours_ms": 140.0, "nanogpt_ms": 150.0, "ratio": 140 / 150},
        "6": {"ours_ms": 80.0, "nanogpt_ms": 90.0, "ratio": 80 / 90},
    }
    rows = seeds_rows({"seed003_step": {"batches": batches, "rounds": 8}})
    assert [r.figure.split(" (")[0] for r in rows] == [
        "seed003's training step alone, batch 12",
        "seed003's training step alone, batch 6",
    ]
    assert (rows[0].ours, rows[0].reference, rows[0].met) == ("140.0", "150.0", None)
    assert rows[1].ratio == pytest.approx(0.889, abs=1e-3)


def test_the_step_floor_gets_a_row_after_its_batch_against_nanogpts_whole_step():
    from benchmarks.table import seeds_rows

    times = {"ours_ms": 108.0, "nanogpt_ms": 112.0, "ratio": 108 / 112}
    floor = {"floor_ms": 61.6, "floor_dtype": "float32", "floor_ratio": 61.6 / 112}
    rows = seeds_rows({"seed003_step": {"batches": {"12": times | floor}, "rounds": 8}})
    assert [r.figure.split(":")[0] for r in rows] == [
        "seed003's training step alone, batch 12 (ms; vs nanoGPT's model.py and loop, one process, "
        "alternating rounds)",
        "seed003's step floor, batch 12",
    ]
    assert "float32 matrix products alone" in rows[1].figure
    assert (rows[1].ours, rows[1].reference, rows[1].met) == ("61.6", "112.0", None)
    assert rows[1].ratio == pytest.approx(0.55, abs=1e-3)
    # records from before the floor was measured keep their one row per batch
    assert len(seeds_rows({"seed003_step": {"batches": {"12": times}, "rounds": 8}})) == 1


def test_the_seeds_table_says_whether_the_step_floor_puts_half_of_nanogpts_time_in_reach():
    from benchmarks.table import seeds_table

    def line(floor_ms: float) -> str:
        times = {
            "ours_ms": 93.0,
            "nanogpt_ms": 93.5,
            "floor_ms": floor_ms,
            "floor_dtype": "float32",
        }
        times["floor_ratio"] = floor_ms / 93.5
        step = {"batches": {"12": times, "6": times}}
        lines = seeds_table({"seeds": {"results": {"seed003_step": step}}}).splitlines()
        (row,) = [line for line in lines if line.startswith("| 003, its step |")]
        return row

    assert "float32 Linear products alone take 54.2 ms, 0.58x nanoGPT's whole step" in line(54.2)
    assert "out of reach on this CPU" in line(54.2)
    assert "leaves room for half of nanoGPT's time" in line(30.0)  # a bf16 machine's floor, say


def test_linear_products_are_three_per_linear_of_every_block_and_the_head():
    products = bench.linear_products({"n_embd": 4, "n_layer": 2}, vocab=7, tokens=10)
    assert len(products) == 3 * (4 * 2 + 1)
    # forward, input gradient, weight gradient of c_attn (4 -> 12) over 10 tokens
    assert products[:3] == [(10, 4, 12), (10, 12, 4), (12, 10, 4)]
    assert products[-3:] == [(10, 4, 7), (10, 7, 4), (7, 10, 4)]  # the head
    flops = sum(2 * m * k * n for m, k, n in products)
    params = 2 * (4 * 12 + 4 * 4 + 4 * 16 + 16 * 4) + 4 * 7
    assert flops == 6 * params * 10  # the 6 x parameters x tokens of a training step


def test_seed001_figure_row_says_when_3_5_was_reached_and_where_it_ended():
    from benchmarks.table import seeds_rows

    figure = {
        "steps": 4000,
        "final_train_loss": 3.21,
        "reached_3_5": {"step": 3100, "train_seconds": 1712.4},
    }
    (row,) = seeds_rows({"seed001_figure": figure})
    assert "early stopping off, 4,000 steps" in row.figure
    assert row.ours == "3.5 after 1712 s of training (step 3,100); 3.21 after 4,000 steps"
    (row,) = seeds_rows({"seed001_figure": figure | {"reached_3_5": None}})
    assert row.ours == "3.5 not reached; 3.21 after 4,000 steps"


def test_results_say_which_seed_parts_were_kept_from_earlier_runs():
    from benchmarks.table import render

    env = json.loads((BENCH.parent / "results" / "seeds.json").read_text())["environment"]
    kept = {"steps": 10, "final_train_loss": 3.0, "reached_3_5": None}
    results = {
        "seed001_figure": kept,
        "seed000": {"train_perplexity": 2.0, "heldout_perplexity": 3.0}
        | {"date": "2026-12-02 10:00 UTC", "machine": "EPYC (avx512f)", "reused_from": "a.json"},
    }
    record = {"date": "d", "command": "c", "seconds": 1.0, "environment": env}
    text = render({"seeds": record | {"results": results}})
    assert "Kept from earlier runs of the same command: seed000 on 2026-12-02 10:00 UTC " in text
    assert "(EPYC (avx512f))." in text and "seed001_figure on" not in text


def test_part_a_rotates_its_sides_so_each_runs_once_in_every_position():
    names = ["ref", "ours", "variant"]
    orders = [bench.run_order(names, repeat) for repeat in range(3)]
    assert orders[0] == names
    for position in range(3):
        assert {order[position] for order in orders} == set(names)
    assert bench.run_order(["ref", "ours"], 1) == ["ours", "ref"]


def test_part_a_trains_each_repeat_under_the_next_seed_from_the_presets_or_the_variants():
    over = {"pretrain": {"max_steps": 20}}
    assert bench.reseeded(over, 0)["pretrain"] == {"max_steps": 20, "seed": 1337}
    assert bench.reseeded(over, 2)["pretrain"]["seed"] == 1339
    assert bench.reseeded({"pretrain": {"seed": 7}, "shard": {"val_fraction": 0.02}}, 1) == {
        "pretrain": {"seed": 8},
        "shard": {"val_fraction": 0.02},
    }
    assert over == {"pretrain": {"max_steps": 20}}  # the caller's overrides stay as they were


def test_a_side_trained_under_several_seeds_shows_its_loss_range_beside_the_median():
    from benchmarks.table import seeds_rows

    ref = {"seconds": 200.0, "heldout_loss": 1.89, "val_loss_own_estimate": 1.88}
    ours = {
        "seconds": 100.0,
        "heldout_loss": 1.9004,
        "heldout_losses": [1.8782, 1.9222, 1.9004],
        "seeds": [1337, 1338, 1339],
        "val_loss": 1.8,
    }
    a = {"iterations": 2000, "nanogpt": ref, "ours": ours, "time_ratio": 0.5}
    row = seeds_rows({"seed003": a | {"meets_target": False}})[0]
    assert row.ours == "1.9004 (median of 3 seeds, 1.878–1.922) in 100 s"
    one_seed = ours | {"seeds": [1337, 1337], "heldout_losses": [1.8782, 1.8782]}
    row = seeds_rows({"seed003": a | {"ours": one_seed, "meets_target": False}})[0]
    assert row.ours == "1.9004 in 100 s"


def test_reuse_takes_the_parts_not_run_from_this_scripts_json_or_run_alls_record(tmp_path):
    select = {"chosen": 0, "candidates": [], "date": "2026-12-06 21:00 UTC"}
    raw = tmp_path / "select.json"
    raw.write_text(json.dumps({"machine": "EPYC", "seed001_select": select}))
    record = tmp_path / "seeds.json"  # run_all's: the script's results under "results"
    a = {"iterations": 2000, "date": "2026-12-06 05:47 UTC", "machine": "EPYC (avx2)"}
    record.write_text(json.dumps({"benchmark": "seeds", "results": {"seed003": a}}))
    kept = bench.reused([raw, record], ["b"])
    assert set(kept) == {"seed001_select", "seed003"}
    assert kept["seed001_select"]["machine"] == "EPYC"  # the file's, where the part has none
    assert kept["seed003"]["reused_from"] == str(record)
    assert bench.reused([raw], ["s", "b"]) == {}  # a part run now is not copied
