"""Where the patched command's extra time goes: wall time *and* the manager process's
CPU time per command, raw queue round trip vs the original vs the patched
``handle_command``, interleaved in rounds on one real echo pipeline:

    .venv/bin/python scripts/command_cpu_cost.py

If the patched wall-time overhead equals its CPU overhead, the cost is work done in
the manager (Python calls, syscalls), not waiting on the pipeline.
"""

from __future__ import annotations

import statistics
import time

from stream_manager_patches import _bench

ROUNDS, PER_ROUND = 5, 2000


def main() -> None:
    calls, managed = _bench.round_trip_calls()
    results: dict = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            for _ in range(100):
                call()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(PER_ROUND):
                call()
            results[name].append(
                ((time.perf_counter() - wall) / PER_ROUND * 1e6, (time.process_time() - cpu) / PER_ROUND * 1e6)
            )
    managed.pipeline_manager.kill()
    for name, samples in results.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        print(f"{name:9s} wall {wall:7.1f} us/command   manager CPU {cpu:6.1f} us/command")


if __name__ == "__main__":
    main()
