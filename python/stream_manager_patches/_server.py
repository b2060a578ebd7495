"""Python-level patches of upstream's request handler and TCP server.

These wrap upstream *classes* (socketserver plumbing), so they stay in Python; every
wait they cause still goes through the native ``handle_command``.

* ``manager_handler``: a subclass of the module's ``InferencePipelinesManagerHandler``:
  - listing copies the table atomically (no "dictionary changed size during
    iteration" when the health daemon removes a pipeline) and leaves out pipelines
    being removed;
  - TERMINATE of a pipeline that is already gone answers NOT_FOUND, not INVALID_PAYLOAD;
  - on generations whose INIT/WEBRTC path talks to the new pipeline without its
    operation lock (inference 0.54 – 1.7), it goes through ``handle_command``, so the
    lock is held and the wait is bounded: otherwise a concurrent health probe can read
    the INIT answer from the shared responses queue and drop it as stale.
* ``server`` (opt-in): a subclass of ``RoboflowTCPServer`` that serves connections on a
  fixed pool of threads, so one slow client or pipeline cannot stall the others.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Callable

from ._native import Config, pipeline_states


def _init_path_holds_lock(get_response: Callable[..., Any]) -> bool:
    """streamvision (inference >= 1.8) passes pipeline_process= and holds the lock in INIT."""
    try:
        return "pipeline_process" in inspect.signature(get_response).parameters
    except (TypeError, ValueError):
        return False


def build_manager_handler(app: ModuleType, original_handler: type, original_get_response: Callable[..., Any]) -> type:
    lock_in_init = not _init_path_holds_lock(original_get_response)

    class PatchedInferencePipelinesManagerHandler(original_handler):  # type: ignore[misc, valid-type]
        __stream_manager_patches__ = "manager_handler"

        def _send(self, request_id: str, response: dict, pipeline_id: Any) -> None:
            payload = app.prepare_response(request_id=request_id, response=response, pipeline_id=pipeline_id)
            app.send_data_trough_socket(
                target=self.request,
                header_size=app.HEADER_SIZE,
                data=payload,
                request_id=request_id,
                pipeline_id=pipeline_id,
            )

        def _list_pipelines(self, request_id: str) -> None:
            entries = list(self._processes_table.items())  # one C call: atomic under the GIL
            states = pipeline_states.snapshot()
            pipelines = [
                pipeline_id
                for pipeline_id, managed in entries
                if not managed.is_idle and not states.get(pipeline_id, {}).get("marked_for_removal")
            ]
            self._send(
                request_id,
                {"pipelines": pipelines, app.STATUS_KEY: app.OperationStatus.SUCCESS},
                None,
            )

        def _terminate_pipeline(self, request_id: str, pipeline_id: str, command: dict) -> None:
            if pipeline_id not in self._processes_table:
                # Already reaped (e.g. by the health daemon): answer like any command would.
                response = app.handle_command(
                    processes_table=self._processes_table,
                    request_id=request_id,
                    pipeline_id=pipeline_id,
                    command=command,
                )
                return self._send(request_id, response, pipeline_id)
            return super()._terminate_pipeline(request_id=request_id, pipeline_id=pipeline_id, command=command)

        if lock_in_init:

            def _spawn_and_command(self, request_id: str, command: dict) -> None:
                managed = app.get_or_spawn_pipeline_process(processes_table=self._processes_table)
                response = app.handle_command(
                    processes_table=self._processes_table,
                    request_id=request_id,
                    pipeline_id=managed.pipeline_id,
                    command=command,
                )
                self._send(request_id, response, managed.pipeline_id)

            def _initialise_pipeline(self, request_id: str, command: dict) -> None:
                self._spawn_and_command(request_id, command)

            def _start_webrtc(self, request_id: str, command: dict) -> None:
                self._spawn_and_command(request_id, command)

    PatchedInferencePipelinesManagerHandler.__name__ = original_handler.__name__
    PatchedInferencePipelinesManagerHandler.__qualname__ = original_handler.__qualname__
    PatchedInferencePipelinesManagerHandler.__module__ = __name__
    return PatchedInferencePipelinesManagerHandler


def build_pooled_server(original_server: type, config: Config) -> type:
    workers = config.server_threads

    class PooledRoboflowTCPServer(original_server):  # type: ignore[misc, valid-type]
        """Accepts on the main thread, serves each connection on a fixed thread pool."""

        __stream_manager_patches__ = "server"
        allow_reuse_address = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smp-tcp")

        def process_request(self, request: Any, client_address: Any) -> None:
            self._pool.submit(self._serve_connection, request, client_address)

        def _serve_connection(self, request: Any, client_address: Any) -> None:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

        def server_close(self) -> None:
            super().server_close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    PooledRoboflowTCPServer.__module__ = __name__
    return PooledRoboflowTCPServer
