"""Downloads against a loopback HTTP server: only complete, valid hdf5 files ever reach their final name."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from envs import get_task, load_dataset
from envs.datasets import download_file, write_d4rl_hdf5
from utils.errors import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        if self.path == "/truncated.hdf5":
            body = self.files["/good.hdf5"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 4096))  # promise more than is sent
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, episodes_factory) -> Iterator[str]:
    hdf5_path = tmp_path_factory.mktemp("served") / "good.hdf5"
    write_d4rl_hdf5(hdf5_path, episodes_factory([3, 4, 2], ["terminal", "timeout", "none"]))
    _Handler.files = {"/good.hdf5": hdf5_path.read_bytes(), "/page.html": b"<html>moved</html>"}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_success(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "datasets" / "good.hdf5"
    assert download_file(f"{server}/good.hdf5", dest) == dest
    assert _only_file(dest.parent) == ["good.hdf5"]  # no .part left
    assert dest.read_bytes() == _Handler.files["/good.hdf5"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/truncated.hdf5", r"(incomplete download|IncompleteRead)"),
        ("/page.html", r"not a valid HDF5 file"),
        ("/missing.hdf5", r"HTTP 404 Not Found"),
    ],
)
def test_failed_download_leaves_nothing_behind(server: str, tmp_path: Path, path: str, reason: str) -> None:
    dest = tmp_path / "datasets" / "data.hdf5"
    with pytest.raises(UserError, match=reason) as err:
        download_file(f"{server}{path}", dest, timeout=5)
    message = str(err.value)
    assert f"could not download {server}{path}" in message and "\n" not in message
    assert "D4RL_DATASET_DIR" in message and "--set dataset_path=" in message and "python collect.py dataset" in message
    assert _only_file(dest.parent) == []


def test_unreachable_url_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hopper_medium-v2.hdf5"
    with pytest.raises(UserError, match=f"could not download {url} ") as err:
        download_file(url, tmp_path / "hopper_medium-v2.hdf5", timeout=5)
    assert "looked for hopper_medium-v2.hdf5 in" in str(err.value)
    assert _only_file(tmp_path) == []


def test_load_dataset_downloads_into_the_default_dir(server: str, dataset_dirs, capsys) -> None:
    spec = dataclasses.replace(get_task("hopper-random-v2"), url=f"{server}/good.hdf5")
    data = load_dataset(spec, backend="hdf5")
    assert data.num_transitions == 9
    assert data.source == str(dataset_dirs.home_datasets / spec.dataset_file)
    assert f"downloading {spec.url}" in capsys.readouterr().err
    assert load_dataset(spec, backend="hdf5", download=False).num_transitions == 9  # found locally now
