"""What observability costs per command, measured natively (not in a timed test):

    .venv/bin/python scripts/observability_overhead.py

* metrics: everything recorded for one command (command histogram + counter, queue
  put/get histograms, adaptive-timeout window), on a scratch registry;
* a disabled log call: the one `isEnabledFor` check a debug record costs when the
  level is off (the default).
"""

from __future__ import annotations

import logging
import statistics

from stream_manager_patches import _native


def main() -> None:
    logging.getLogger("stream_manager_patches").setLevel(logging.WARNING)
    runs = [_native.measure_observability_overhead(200_000) for _ in range(5)]
    metrics = statistics.median(r["metrics_ns_per_command"] for r in runs)
    log_check = statistics.median(r["disabled_log_call_ns"] for r in runs)
    print(f"metrics per command:   {metrics:8.1f} ns (median of 5 x 200k)")
    print(f"disabled log call:     {log_check:8.1f} ns")
    print(f"total added:           {(metrics + log_check) / 1000:8.3f} us per command (goal < 2 us)")


if __name__ == "__main__":
    main()
