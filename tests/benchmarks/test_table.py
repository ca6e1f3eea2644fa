"""RESULTS.md's machine lines: CPUs that share a name are told apart by their numbers."""

from benchmarks.table import machine_line


def environment(family: int | None, model: int | None) -> dict:
    cpu = {"model": "AMD EPYC", "flags": {"avx2": True}, "cores": 2, "threads": 2}
    if family is not None:
        cpu |= {"family": family, "model_number": model}
    return {"cpu": cpu, "memory_bytes": 24 * 2**30}


def test_same_named_cpus_of_other_families_get_other_lines() -> None:
    zen1, zen5 = machine_line(environment(23, 1)), machine_line(environment(26, 2))
    assert zen1 != zen5
    assert zen5.startswith("AMD EPYC (family 26, model 2), 2 cores / 2 threads")


def test_a_record_from_before_the_numbers_says_so() -> None:
    assert "(family and model not recorded)" in machine_line(environment(None, None))
