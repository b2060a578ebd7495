"""``python -m stream_manager_patches bench [--quick] --output-dir DIR``

Runs every scenario twice, with the **patched** functions and with the **upstream
originals** of the installed Inference, on real child processes, in one run. Each
(scenario, variant) runs in its own subprocess under a watchdog, because the originals
hang or crash: a hang is recorded as ``hang (> N s)`` and the run moves on.

Writes ``bench.json`` (every figure), ``bench.md`` (a table) and ``bench.png`` (plots;
needs matplotlib). Figures are ratios and bounds on this machine, not absolutes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

VARIANTS = ("patched", "original")
FAST = dict(queue_timeout=1.0, health_check_timeout=1.0, max_health_failures=3, health_check_interval=1.0)


# --- helpers running inside a scenario subprocess ------------------------------------


class _TimedLock:
    """PROCESSES_TABLE_LOCK stand-in recording the longest hold (also while still held)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.longest = 0.0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._since = time.perf_counter()
        return got

    def release(self) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._since)
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def longest_so_far(self) -> float:
        held = time.perf_counter() - self._since if self._lock.locked() else 0.0
        return max(self.longest, held)


def _setup(variant: str, **config: Any) -> Any:
    import stream_manager_patches as smp

    app = smp.find_target()
    app.PROCESSES_TABLE_LOCK = _TimedLock()
    if variant == "patched":
        smp.apply_patches(app, config=smp.Config(**{**FAST, **config}))
    return app


def _spawn(app: Any, behaviour: str, table: Optional[dict] = None, **options: Any) -> Any:
    from stream_manager_patches import _pipelines

    cq, rq = multiprocessing.Queue(), multiprocessing.Queue()
    proc = multiprocessing.Process(target=_pipelines.run, args=(behaviour, cq, rq, options), daemon=True)
    proc.start()
    pipeline_id = f"{behaviour}-{uuid.uuid4().hex[:6]}"
    managed = app.ManagedInferencePipeline(
        pipeline_id=pipeline_id,
        pipeline_manager=proc,
        command_queue=cq,
        responses_queue=rq,
        operation_lock=threading.Lock(),
        is_idle=False,
    )
    (table if table is not None else app.PROCESSES_TABLE)[pipeline_id] = managed
    return managed


def _status(app: Any, table: dict, managed: Any) -> dict:
    return app.handle_command(table, uuid.uuid4().hex, managed.pipeline_id, {"type": "status", "pipeline_id": managed.pipeline_id})


def _wait_for(predicate: Callable[[], bool], timeout: float) -> Optional[float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.01)
    return None


def _percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


# --- scenarios (each returns a flat dict of figures) ----------------------------------


def round_trip_calls() -> Tuple[Dict[str, Callable[[], None]], Any]:
    """One echo pipeline and three ways to send it a STATUS: ``raw`` (the queue round
    trip, ``put`` then ``get``, no wrapper), the ``original`` and the ``patched``
    ``handle_command``. Returns the calls and the pipeline (kill it when done)."""
    import stream_manager_patches as smp

    app = _setup("original")
    original = app.handle_command
    patched = smp._native.bind_patches(app, smp.Config(queue_timeout=10.0))["handle_command"]
    table: dict = {}
    managed = _spawn(app, "echo", table)
    command = {"type": "status"}

    def raw() -> None:
        rid = uuid.uuid4().hex
        managed.command_queue.put((rid, command))
        while managed.responses_queue.get()[0] != rid:
            pass

    calls = {
        "raw": raw,
        "original": lambda: original(table, uuid.uuid4().hex, managed.pipeline_id, command),
        "patched": lambda: patched(table, uuid.uuid4().hex, managed.pipeline_id, command),
    }
    return calls, managed


def scenario_round_trip(variant: str, quick: bool) -> Dict[str, Any]:
    """Raw queue round trip, original and patched handle_command, interleaved in small
    blocks in one process on one pipeline, so machine noise hits all three alike.
    Returns figures for both variants (``_split`` makes two rows of them)."""
    calls, _ = round_trip_calls()
    samples: Dict[str, List[float]] = {k: [] for k in calls}
    n = 600 if quick else 5000
    for call in calls.values():
        for _ in range(50):
            call()
    for _ in range(n // 50):
        for name, call in calls.items():
            for _ in range(50):
                t = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - t)
    raw_p50 = statistics.median(samples["raw"])
    out: Dict[str, Any] = {}
    for name in ("patched", "original"):
        out[name] = {
            "commands": n,
            "p50_us": statistics.median(samples[name]) * 1e6,
            "p99_us": _percentile(samples[name], 0.99) * 1e6,
            "raw_p50_us": raw_p50 * 1e6,
            "raw_p99_us": _percentile(samples["raw"], 0.99) * 1e6,
            "overhead_over_raw_p50_pct": (statistics.median(samples[name]) / raw_p50 - 1) * 100,
        }
    return {"split": out}


def scenario_concurrent(variant: str, quick: bool) -> Dict[str, Any]:
    app = _setup(variant, queue_timeout=10.0)
    table: dict = {}
    pipelines = [_spawn(app, "echo", table) for _ in range(8)]
    per_thread = 150 if quick else 1000
    for m in pipelines:
        _status(app, table, m)

    def work(m: Any) -> None:
        for _ in range(per_thread):
            _status(app, table, m)

    threads = [threading.Thread(target=work, args=(m,)) for m in pipelines]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"threads": 8, "pipelines": 8, "commands": 8 * per_thread, "commands_per_s": 8 * per_thread / elapsed}


def scenario_hung(variant: str, quick: bool) -> Dict[str, Any]:
    app = _setup(variant)
    table: dict = {}
    managed = _spawn(app, "hang", table)
    t = time.perf_counter()
    answer = _status(app, table, managed)
    return {"answer_s": time.perf_counter() - t, "answer": str(answer.get("error_type", answer.get("status")))}


def scenario_dies(variant: str, quick: bool) -> Dict[str, Any]:
    app = _setup(variant, queue_timeout=10.0)
    table: dict = {}
    times = []
    answer: dict = {}
    for _ in range(3 if quick else 10):
        managed = _spawn(app, "die", table)
        t = time.perf_counter()
        answer = _status(app, table, managed)
        times.append(time.perf_counter() - t)
    return {"answer_s": max(times), "median_s": statistics.median(times), "answer": str(answer.get("error_type"))}


def _scenario_sweep(variant: str, quick: bool, hung: int) -> Dict[str, Any]:
    app = _setup(variant)
    healthy = 4 if quick else 8
    for _ in range(healthy):
        _spawn(app, "echo")
    stuck = [_spawn(app, "hang") for _ in range(hung)]
    threading.Thread(target=app.check_process_health, daemon=True).start()
    watchdog = 8.0 if quick else 15.0
    took = _wait_for(lambda: all(m.pipeline_id not in app.PROCESSES_TABLE for m in stuck), watchdog)
    return {
        "healthy": healthy,
        "hung": hung,
        "all_hung_reaped_s": took if took is not None else f"never (> {watchdog:g} s)",
        "longest_lock_hold_s": app.PROCESSES_TABLE_LOCK.longest_so_far(),
    }


def _scenario_termination(variant: str, quick: bool, stubborn: int) -> Dict[str, Any]:
    app = _setup(variant)
    made = [_spawn(app, "ignore_sigterm") for _ in range(stubborn)]
    made += [_spawn(app, "echo") for _ in range(8 - stubborn)]
    time.sleep(0.3)
    outcome = "exit(0)"
    t = time.perf_counter()
    with mock.patch.object(app.sys, "exit") as exit_mock:
        try:
            app.execute_termination(signal.SIGTERM, None, app.PROCESSES_TABLE)
        except Exception as error:
            outcome = f"{type(error).__name__}: {error}"
        else:
            if exit_mock.call_args != mock.call(0):
                outcome = f"exit called with {exit_mock.call_args}"
    elapsed = time.perf_counter() - t
    return {"done_s": elapsed, "outcome": outcome, "left_alive": sum(m.pipeline_manager.is_alive() for m in made)}


def scenario_health_cpu(variant: str, quick: bool) -> Dict[str, Any]:
    import stream_manager_patches as smp

    app = _setup(variant)
    probes = [0]
    if variant == "original":
        original = app.handle_command

        def counting(*args: Any, **kwargs: Any) -> Any:
            probes[0] += 1
            return original(*args, **kwargs)

        app.handle_command = counting
    for _ in range(32):
        _spawn(app, "echo")
    time.sleep(1.0)
    seconds = 10.0 if quick else 30.0
    before = resource.getrusage(resource.RUSAGE_SELF)
    threading.Thread(target=app.check_process_health, daemon=True).start()
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sent = smp.performance_summary()["health_checks"] if variant == "patched" else probes[0]
    return {"pipelines": 32, "seconds": seconds, "probes_sent": sent, "manager_cpu_s": cpu}


SCENARIOS: Dict[str, Callable[[str, bool], Dict[str, Any]]] = {
    "1. round trip, healthy pipeline": scenario_round_trip,
    "2. throughput, 8 threads x 8 pipelines": scenario_concurrent,
    "3. command to a hung pipeline (timeout 1 s)": scenario_hung,
    "4. command to a pipeline dying mid-request (timeout 10 s)": scenario_dies,
    **{
        f"5. health sweep, K={k} hung": (lambda k: lambda v, q: _scenario_sweep(v, q, k))(k)
        for k in (1, 2, 4, 8)
    },
    "6a. terminate 8 cooperative": lambda v, q: _scenario_termination(v, q, 0),
    "6b. terminate 4 ignoring SIGTERM + 4 (grace 5 s)": lambda v, q: _scenario_termination(v, q, 4),
    "7. health daemon cost, 32 healthy": scenario_health_cpu,
}


def _run_one(name: str, variant: str, quick: bool) -> None:
    result = SCENARIOS[name](variant, quick)
    print("RESULT " + json.dumps(result), flush=True)
    # The originals may leave pipelines running: that is measured, now end them, or
    # they would hold our stdout open and outlive us.
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(0)


def _watchdog(name: str, quick: bool) -> float:
    if name.startswith("7."):
        return 60.0 if quick else 90.0
    return 20.0 if quick else 40.0


def run_all(quick: bool, only: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    rows = []
    for name in SCENARIOS:
        if only and not any(name.startswith(o) for o in only):
            continue
        split_pending: Dict[str, Any] = {}
        for variant in VARIANTS:
            if variant in split_pending:
                figures = split_pending.pop(variant)
                rows.append({"scenario": name, "variant": variant, "wall_s": 0.0, **figures})
                print(f"{name:58s} {variant:9s} {json.dumps(figures)}", flush=True)
                continue
            limit = _watchdog(name, quick)
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "stream_manager_patches", "bench", "--scenario", name, "--variant", variant]
                    + (["--quick"] if quick else []),
                    capture_output=True,
                    text=True,
                    timeout=limit,
                )
                line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line:
                    figures: Dict[str, Any] = json.loads(line[7:])
                    if "split" in figures:  # one run measured both variants side by side
                        split_pending = dict(figures["split"])
                        figures = split_pending.pop(variant)
                else:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    figures = {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
            except subprocess.TimeoutExpired:
                figures = {"hang": f"hang (> {limit:g} s)"}
            row = {"scenario": name, "variant": variant, "wall_s": round(time.monotonic() - started, 2), **figures}
            rows.append(row)
            print(f"{name:58s} {variant:9s} {json.dumps(figures)}", flush=True)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


KEY_FIGURES = {
    "1.": ["p50_us", "p99_us", "raw_p50_us", "raw_p99_us", "overhead_over_raw_p50_pct"],
    "2.": ["commands_per_s"],
    "3.": ["answer_s", "answer"],
    "4.": ["answer_s", "answer"],
    "5.": ["all_hung_reaped_s", "longest_lock_hold_s"],
    "6a": ["done_s", "outcome", "left_alive"],
    "6b": ["done_s", "outcome", "left_alive"],
    "7.": ["probes_sent", "manager_cpu_s"],
}


def write_markdown(rows: List[Dict[str, Any]], path: str, meta: Dict[str, Any]) -> None:
    lines = [
        "| scenario | figure | patched | original |",
        "|---|---|---|---|",
    ]
    by_key: Dict[Tuple[str, str], Dict[str, Any]] = {(r["scenario"], r["variant"]): r for r in rows}
    for name in dict.fromkeys(r["scenario"] for r in rows):
        keys = next(v for k, v in KEY_FIGURES.items() if name.startswith(k))
        patched, original = by_key.get((name, "patched"), {}), by_key.get((name, "original"), {})
        for key in keys:
            def cell(row: Dict[str, Any]) -> str:
                if key in row:
                    return _fmt(row[key])
                return _fmt(row.get("hang") or row.get("error") or "")
            lines.append(f"| {name} | {key} | {cell(patched)} | {cell(original)} |")
    header = (
        f"Machine: {meta['machine']}; command: `{meta['command']}`; date: {meta['date']}; "
        f"target: {meta['target']}\n\n"
    )
    with open(path, "w") as out:
        out.write(header + "\n".join(lines) + "\n")


def write_plot(rows: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: pip install matplotlib"

    def value(name_prefix: str, variant: str, key: str, cap: float) -> float:
        for r in rows:
            if r["scenario"].startswith(name_prefix) and r["variant"] == variant:
                v = r.get(key)
                return float(v) if isinstance(v, (int, float)) else cap
        return 0.0

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colors = {"patched": "#2a9d8f", "original": "#e76f51"}
    # Round trip vs raw floor.
    ax = axes[0][0]
    labels = ["p50", "p99"]
    for i, variant in enumerate(VARIANTS):
        ax.bar([x + i * 0.27 for x in range(2)], [value("1.", variant, "p50_us", 0), value("1.", variant, "p99_us", 0)], 0.27, label=variant, color=colors[variant])
    ax.bar([x + 2 * 0.27 for x in range(2)], [value("1.", "patched", "raw_p50_us", 0), value("1.", "patched", "raw_p99_us", 0)], 0.27, label="raw queue floor", color="#999")
    ax.set_xticks([x + 0.27 for x in range(2)], labels)
    ax.set_ylabel("µs")
    ax.set_title("1. command round trip (healthy pipeline)")
    ax.legend()
    # Faulty pipelines: time to answer (hang drawn at the watchdog).
    ax = axes[0][1]
    cases = [("3.", "hung"), ("4.", "dies mid-request")]
    for i, variant in enumerate(VARIANTS):
        ax.bar([x + i * 0.4 for x in range(2)], [value(p, variant, "answer_s", 20.0) for p, _ in cases], 0.4, label=variant, color=colors[variant])
    ax.set_xticks([x + 0.2 for x in range(2)], [c[1] for c in cases])
    ax.set_ylabel("s to answer (original: hang, drawn at the watchdog)")
    ax.set_title("3-4. command to a faulty pipeline")
    ax.legend()
    # Sweep reap time vs K.
    ax = axes[1][0]
    ks = [1, 2, 4, 8]
    for variant in VARIANTS:
        ax.plot(ks, [value(f"5. health sweep, K={k} ", variant, "all_hung_reaped_s", 20.0) for k in ks], "o-", label=variant, color=colors[variant])
    ax.set_xlabel("hung pipelines K")
    ax.set_ylabel("s until all hung reaped (original: never)")
    ax.set_title("5. health sweep")
    ax.legend()
    # Termination.
    ax = axes[1][1]
    cases = [("6a", "8 cooperative"), ("6b", "4 ignore SIGTERM")]
    for i, variant in enumerate(VARIANTS):
        ax.bar([x + i * 0.4 for x in range(2)], [value(p, variant, "done_s", 0) for p, _ in cases], 0.4, label=variant, color=colors[variant])
    ax.axhline(5.0, ls="--", color="#555", label="fixed 5 s grace sleep")
    ax.set_xticks([x + 0.2 for x in range(2)], [c[1] for c in cases])
    ax.set_ylabel("s (original crashes at once, all left alive)")
    ax.set_title("6. termination")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def main(args: Any) -> int:
    if args.scenario:
        _run_one(args.scenario, args.variant, args.quick)
        return 0
    os.makedirs(args.output_dir, exist_ok=True)
    import stream_manager_patches as smp

    from . import _target

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python -m stream_manager_patches bench" + (" --quick" if args.quick else "") + f" --output-dir {args.output_dir}",
        "date": time.strftime("%Y-%m-%d"),
        "target": f"inference {_target.package_version('inference') or _target.package_version('inference-cpu') or _target.package_version('inference-core')}",
        "stream_manager_patches": smp.__version__,
    }
    started = time.monotonic()
    rows = run_all(args.quick, args.only)
    meta["total_s"] = round(time.monotonic() - started, 1)
    with open(os.path.join(args.output_dir, "bench.json"), "w") as out:
        json.dump({"meta": meta, "rows": rows}, out, indent=2)
    write_markdown(rows, os.path.join(args.output_dir, "bench.md"), meta)
    problem = write_plot(rows, os.path.join(args.output_dir, "bench.png"))
    print(f"wrote bench.json, bench.md{', bench.png' if not problem else ''} to {args.output_dir} in {meta['total_s']} s")
    if problem:
        print(problem)
    return 0
