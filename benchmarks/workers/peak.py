"""This process's peak resident memory, for workers spawned by a large process.

Linux's `wait4` ru_maxrss (what `benchmarks.harness.run_worker` reports) also counts the memory
the worker had mapped before its exec, which is the spawning process's; VmHWM in
/proc/self/status is the worker's own. Imports nothing, so importing it costs a worker no
memory.
"""


def hwm() -> int:
    """This process's peak RSS in bytes (VmHWM; Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
