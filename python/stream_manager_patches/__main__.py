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
    try:
        target = _target.find_target()
        report["target"] = target.__name__
    except ImportError as error:
        report["target"] = None
        report["target_error"] = str(error)
    try:
        config = Config.from_env()
        report["config"] = config.to_dict()
    except ValueError as error:
        report["config_error"] = str(error)
    report["active_patches"] = list(_patching.active_patches())
    print(json.dumps(report, indent=2))
    return 0 if report.get("target") and "config_error" not in report else 1


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    target = _target.find_target()
    installed = _patching.install_from_env(target)
    target.HOST = args.host
    target.PORT = args.port
    print(
        f"stream-manager-patches: serving {target.__name__} on {args.host}:{args.port} "
        f"with patches {list(installed) or 'none'}",
        flush=True,
    )
    target.start(expected_warmed_up_pipelines=args.warm)
    return 0


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

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
