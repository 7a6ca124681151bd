"""`harness ui`: the MLflow UI on the tracking store that `harness run` writes to.

`mlflow server` starts ~15 processes (~3 GiB); `mlflow ui --workers 1` with job execution off
is enough to browse runs (~0.5 GiB, a few seconds). It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.errors import HarnessError
from harness.tracking.mlflow_tracker import import_mlflow, is_server, resolve_store
from harness.tracking.views import EXPERIMENT_KIND_TAG, VIEW_TAG, compare_url, runs_url


def ui_command(store: str, artifact_root: str | None, host: str, port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--workers",
        "1",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        store,
    ]
    if artifact_root:
        command += ["--default-artifact-root", artifact_root]
    return command


def start_ui(
    uri: str | None = None, *, host: str = "127.0.0.1", port: int = 5000, timeout_s: float | None = 90.0
) -> tuple[subprocess.Popen, str]:
    """Start the MLflow UI, wait until /health answers; returns (process, URL). timeout_s=None
    waits for as long as it takes (until /health answers or the server exits: tests, whose
    safety net is pytest-timeout)."""
    store, artifact_root = resolve_store(uri)
    if is_server(store) or store.startswith("databricks"):
        raise HarnessError(f"the tracking URI {store} is a server already", fix="open it in a browser")
    if not 1 <= port <= 65535:
        raise HarnessError(
            f"--port {port} is not a TCP port", key="--port", fix="pass a number from 1 to 65535, e.g. 5000"
        )
    bind_problem = _bind_problem(host, port)
    if bind_problem:
        raise HarnessError(bind_problem[0], key=bind_problem[1], fix=bind_problem[2])
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tempfile.NamedTemporaryFile("w+", prefix="harness-mlflow-ui-", suffix=".log", delete=False)
    # Its own session: a Ctrl-C in the terminal reaches harness, which stops the server in order.
    proc = subprocess.Popen(
        ui_command(store, artifact_root, host, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    url = f"http://{_url_host(host)}:{port}"
    try:
        _wait_until_healthy(proc, url, timeout_s)
    except BaseException:  # Ctrl-C while starting, or a timeout: never leave the server behind
        stop_ui(proc)
        raise
    return proc, url


def _wait_until_healthy(proc: subprocess.Popen, url: str, timeout_s: float | None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(
                f"the MLflow UI exited with code {proc.returncode}: {_tail(proc.log_path)}", fix=f"see {proc.log_path}"
            )
        if healthy(url):
            return
        time.sleep(0.3)
    raise HarnessError(f"the MLflow UI did not answer on {url} within {timeout_s:.0f} s", fix=f"see {proc.log_path}")


def stop_ui(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGTERM to the server we started (mlflow passes it on to its uvicorn worker), then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def serve(uri: str | None, host: str, port: int, echo) -> None:
    """`harness ui`: start, print the URL, keep running until Ctrl-C or until the server stops."""
    proc, url = start_ui(uri, host=host, port=port)
    try:
        # The server has its own session: a kill or a closed terminal must stop it too, like Ctrl-C.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        echo(f"MLflow UI on {resolve_store(uri)[0]}: [bold]{url}[/] (Ctrl-C stops it)")
        for line in link_lines(resolve_store(uri)[0], url):
            echo(line, soft_wrap=True, highlight=False)  # a wrapped URL is a broken link
        code = proc.wait()
    except KeyboardInterrupt:
        stop_ui(proc)
        echo("MLflow UI stopped")
        return
    finally:
        stop_ui(proc)  # whatever happened, never leave the server behind
    raise HarnessError(
        f"the MLflow UI stopped by itself with code {code}: {_tail(proc.log_path)}", fix=f"see {proc.log_path}"
    )


def link_lines(store: str, url: str) -> list[str]:
    """Where to click: each harness experiment's runs table (its arms with their metrics) and the
    compare view of its latest run's arms. Best effort: the UI is useful without them."""
    try:
        links = experiment_links(store, url)
    except Exception as error:  # noqa: BLE001 - a store MLflow cannot read still opens in the UI
        return [f"[yellow]could not list the experiments[/] ({type(error).__name__})"]
    lines = []
    for name, runs, compare in links:
        lines.append(f"  {name}: runs {runs}")
        if compare:
            lines.append(f"  {name}: compare the arms of the latest run {compare}")
    return lines


def experiment_links(store: str, base: str, limit: int = 5) -> list[tuple[str, str, str | None]]:
    """(experiment name, runs-table URL, compare URL of its latest run's arms) for the harness
    experiments of a store, most recently updated first."""
    client = import_mlflow().MlflowClient(tracking_uri=store)
    found = [
        e
        for e in client.search_experiments(order_by=["last_update_time DESC"])
        if e.tags.get(EXPERIMENT_KIND_TAG) or e.tags.get(VIEW_TAG)
    ][:limit]
    links = []
    for experiment in found:
        parents = client.search_runs(
            [experiment.experiment_id],
            filter_string="tags.`harness.run_dir` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        compare = None
        if parents:
            parent_id = parents[0].info.run_id
            children = client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
            )
            if children:
                compare = compare_url(base, experiment.experiment_id, [r.info.run_id for r in children])
        links.append(
            (
                experiment.name,
                runs_url(base, experiment.experiment_id, shared_view=bool(experiment.tags.get(VIEW_TAG))),
                compare,
            )
        )
    return links


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _bind_problem(host: str, port: int) -> tuple[str, str, str] | None:
    """(problem, option, fix) when the UI cannot listen on host:port; None when it can. A host
    that is no address of this machine is not a busy port."""
    import errno

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return (
            f"--host {host} is not an address or name this machine can resolve",
            "--host",
            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
        )
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use", "--port", "pass --port with a free port"
            if err.errno == errno.EADDRNOTAVAIL:
                return (
                    f"--host {host} is not an address of this machine",
                    "--host",
                    "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
                )
            if err.errno == errno.EACCES:
                return f"port {port} needs root", "--port", "pass a port above 1023, e.g. 5000"
            return f"cannot listen on {host}:{port} ({err.strerror})", "--host", "check --host and --port"
    return None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:500]
