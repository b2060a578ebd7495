"""Command line: ``python -m stream_manager_patches {serve,doctor}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from . import _patching, _target
from ._native import Config


def _doctor(_: argparse.Namespace) -> int:
    report = {
        "stream_manager_patches": _target.package_version("stream-manager-patches"),
        "inference": _target.package_version("inference")
        or _target.package_version("inference-cpu")
        or _target.package_version("inference-core"),
        "streamvision": _target.package_version("streamvision"),
    }
    from . import _compat

    target = None
    try:
        target = _target.find_target()
        report["target"] = target.__name__
    except ImportError as error:
        report["target"] = None
        report["target_error"] = str(error)
    try:
        config = Config.from_env()
        report["config"] = config.to_dict()
        report["patches_selected_by_environment"] = list(config.patches)
    except ValueError as error:
        report["config_error"] = str(error)
    report["patches_active_in_this_process"] = list(_patching.active_patches())
    if target is not None:
        selected = report.get("patches_selected_by_environment") or list(_patching.DEFAULT_PATCH_NAMES)
        report["compatibility"] = _compat.report(target, selected)
    print(json.dumps(report, indent=2))
    return 0 if report.get("target") and "config_error" not in report else 1


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import _ops

    target = _target.find_target()
    installed = _patching.install_from_env(target)
    target.HOST = args.host
    target.PORT = args.port
    exporter = _ops.start_metrics_exporter()
    metrics = f", metrics on http://{exporter.host}:{exporter.port}/metrics" if exporter else ""
    print(
        f"stream-manager-patches: serving {target.__name__} on {args.host}:{args.port} "
        f"with patches {list(installed) or 'none'}{metrics}",
        flush=True,
    )
    target.start(expected_warmed_up_pipelines=args.warm)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run a patched manager on real pipelines and narrate what happens, with timings."""
    import asyncio
    import os
    import signal
    import tempfile
    import time

    from . import _e2e

    logging.disable(logging.CRITICAL)  # the client logs every error answer; we report them
    failures: List[str] = []

    def report(step: _e2e.Timed, note: str = "") -> None:
        print(f"  {step.name:<44} {step.seconds:7.3f} s  {step.outcome:<32} {note}", flush=True)

    workdir = tempfile.mkdtemp(prefix="smp-demo-")
    short = _e2e.make_video(os.path.join(workdir, "short.mp4"), seconds=args.video_seconds)
    long = _e2e.make_video(os.path.join(workdir, "long.mp4"), seconds=60.0)
    patches = os.environ.get("STREAM_MANAGER_PATCHES", "all,server")
    print(f"stream-manager-patches demo: patches={patches}, videos in {workdir}", flush=True)
    started = time.monotonic()
    manager = _e2e.ManagerProcess.start(patches=patches)
    print(f"  {'manager listening on 127.0.0.1:' + str(manager.port):<44} {time.monotonic() - started:7.3f} s", flush=True)
    try:
        client = manager.client()
        init = _e2e.timed("init pipeline (empty workflow, short video)", client.initialise_pipeline(initialisation_request=_e2e.init_payload(short)))
        report(init)
        if init.outcome != "ok":
            failures.append("init failed")
            return 1
        pipeline_id = init.value.context.pipeline_id
        report(_e2e.timed("status", client.get_status(pipeline_id)))
        report(_e2e.timed("consume result", client.consume_pipeline_result(pipeline_id, excluded_fields=["image"])))

        # Poll through the end of the video: upstream wedges here.
        poll_until = time.monotonic() + args.video_seconds + 6
        outcomes: dict = {}
        worst = 0.0
        while time.monotonic() < poll_until:
            step = _e2e.timed("status", client.get_status(pipeline_id))
            outcomes[step.outcome] = outcomes.get(step.outcome, 0) + 1
            worst = max(worst, step.seconds)
            time.sleep(0.05)
        print(f"  {'status polled through the video end':<44} {worst:7.3f} s  worst of {sum(outcomes.values())}: {outcomes}", flush=True)
        if "ConnectivityError" in outcomes:
            failures.append("ConnectivityError after the video ended")
        listing = _e2e.timed("list pipelines after the video ended", client.list_pipelines())
        report(listing, f"pipelines={getattr(listing.value, 'pipelines', None)}")

        before = manager.children()
        second = _e2e.timed("init a second pipeline (long video)", client.initialise_pipeline(initialisation_request=_e2e.init_payload(long)))
        report(second)
        victims = manager.children() - before
        if second.outcome == "ok" and victims:
            victim = victims.pop()
            second_id = second.value.context.pipeline_id
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            step = _e2e.timed("status right after SIGKILL of its process", client.get_status(second_id))
            report(step)
            while time.monotonic() - killed_at < 10:
                listed = asyncio.run(client.list_pipelines()).pipelines
                if second_id not in listed:
                    break
                time.sleep(0.02)
            gone = time.monotonic() - killed_at
            print(f"  {'killed pipeline reaped and unlisted':<44} {gone:7.3f} s", flush=True)
            if gone >= 10:
                failures.append("killed pipeline still listed after 10 s")
        else:
            failures.append("second pipeline did not start")

        stop_started = time.monotonic()
        rc = manager.stop(signal.SIGTERM)
        alive = [pid for pid in manager.seen_children if _e2e.pid_alive(pid)]
        print(f"  {'SIGTERM to the manager':<44} {time.monotonic() - stop_started:7.3f} s  exit code {rc}, pipeline processes left: {len(alive)}", flush=True)
        if rc != 0 or alive:
            failures.append(f"manager exit {rc}, {len(alive)} processes left")
    finally:
        manager.kill()
    print("demo: OK" if not failures else f"demo: FAILED: {'; '.join(failures)}", flush=True)
    return 0 if not failures else 1


def _probe(args: argparse.Namespace) -> int:
    import os

    from . import _ops

    result = _ops.probe_manager(args.host, args.port, args.timeout)
    if result.ok and args.ready:
        url = args.metrics_url or (
            f"http://{args.host}:{os.environ.get(_ops.ENV_METRICS_PORT, '9108')}/metrics"
        )
        result = _ops.probe_readiness(url, args.timeout, args.max_sweep_age)
    print(f"{'OK' if result.ok else 'FAIL'} {result.reason} ({result.seconds * 1e3:.1f} ms)", flush=True)
    return result.exit_code


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="stream-manager-patches")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the real stream manager with the patches from the environment")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7070)
    serve.add_argument("--warm", type=int, default=0, help="idle pipelines to keep warmed up")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    doctor = commands.add_parser("doctor", help="show the target, versions, configuration and active patches")
    doctor.set_defaults(run=_doctor)

    probe = commands.add_parser("probe", help="liveness (and --ready: readiness) check of a running manager")
    probe.add_argument("--host", default="127.0.0.1")
    probe.add_argument("--port", type=int, default=7070)
    probe.add_argument("--timeout", type=float, default=2.0, help="bound on the whole check, seconds")
    probe.add_argument("--ready", action="store_true", help="also require a fresh health-daemon heartbeat")
    probe.add_argument("--metrics-url", default=None, help="default: http://HOST:$STREAM_MANAGER_METRICS_PORT/metrics")
    probe.add_argument("--max-sweep-age", type=float, default=10.0, help="oldest acceptable health sweep, seconds")
    probe.set_defaults(run=_probe)

    bench = commands.add_parser("bench", help="patched vs original functions, side by side, on real child processes")
    bench.add_argument("--quick", action="store_true", help="smaller runs, under 3 minutes in all")
    bench.add_argument("--output-dir", default="bench-out")
    bench.add_argument("--only", nargs="*", default=None, help="scenario prefixes to run, e.g. 1. 5.")
    bench.add_argument("--scenario", default=None, help=argparse.SUPPRESS)
    bench.add_argument("--variant", default=None, choices=("patched", "original"), help=argparse.SUPPRESS)
    bench.set_defaults(run=lambda a: __import__("stream_manager_patches._bench", fromlist=["main"]).main(a))

    demo = commands.add_parser("demo", help="run a patched manager on real pipelines and report timings")
    demo.add_argument("--video-seconds", type=float, default=2.0)
    demo.set_defaults(run=_demo)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
