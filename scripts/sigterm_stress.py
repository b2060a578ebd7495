"""SIGTERM a patched stream manager with daemons running, many times.

Each run starts ``tests/manager_process.py`` (the real app module, patched, with
upstream's signal wiring, the health and warm-up daemons, and the main thread sending
commands) over real pipelines that echo, go slow, hang, ignore SIGTERM or never read,
waits a random moment, sends SIGTERM, and checks: exit code 0, within a bound, and no
pipeline process left behind.

    .venv/bin/python scripts/sigterm_stress.py --runs 100

Prints one line per failed run and a summary; exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MANAGER = os.path.join(HERE, "..", "tests", "manager_process.py")
BEHAVIOURS = "echo,echo,slow,hang,ignore_sigterm,deaf"
#: grace period 1 s (manager_process.py) + slack for a busy 2-core machine
EXIT_BOUND = 10.0


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def one_run(rng: random.Random) -> dict:
    proc = subprocess.Popen(
        [sys.executable, MANAGER, BEHAVIOURS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        if not line:
            return {"ok": False, "why": "did not start: " + proc.stderr.read()[-500:]}
        info = json.loads(line)
        time.sleep(rng.uniform(0.05, 1.5))  # anywhere in a sweep, a probe or a command
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            return {"ok": False, "why": f"no exit within {EXIT_BOUND} s"}
        exit_s = time.monotonic() - sent
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not all(gone(p) for p in info["pipelines"]):
            time.sleep(0.05)
        left = [p for p in info["pipelines"] if not gone(p)]
        if rc != 0 or left:
            why = f"rc={rc} left={left} stderr={proc.stderr.read()[-800:]!r}"
            return {"ok": False, "why": why, "exit_s": exit_s}
        return {"ok": True, "exit_s": exit_s}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    results = []
    for n in range(args.runs):
        result = one_run(rng)
        results.append(result)
        if not result["ok"]:
            print(f"run {n}: FAILED: {result['why']}", flush=True)
    ok = sum(r["ok"] for r in results)
    times = [r["exit_s"] for r in results if r["ok"]]
    print(
        f"{ok}/{args.runs} exited 0 with no pipeline left "
        f"(seed {args.seed}, {time.monotonic() - started:.0f} s total); "
        f"SIGTERM to exit: median {statistics.median(times) if times else float('nan'):.2f} s, "
        f"max {max(times, default=float('nan')):.2f} s",
        flush=True,
    )
    return 0 if ok == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
