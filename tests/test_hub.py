"""The real hub download path of ``PandaPipeline.from_pretrained``, against a hub-compatible server on loopback.

``FakeHub`` speaks the part of the Hugging Face hub protocol that ``huggingface_hub.snapshot_download`` uses:

- ``GET /api/models/{repo_id}/revision/{revision}``: the repo's info, whose ``sha`` is the commit the revision
  points to; ``GET /api/models/{repo_id}/tree/{revision}``: its files (path, git blob id, size, and for an LFS
  file its sha256 and size). snapshot_download lists the repo this way, then fetches each file it wants with
  ``hf_hub_download`` at that commit.
- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` on the hub origin. A regular file is answered with
  ``200``, ``X-Repo-Commit``, ``ETag`` (its git blob sha1) and ``Content-Length``. An LFS file
  (``model.safetensors``) is answered with a ``302`` to a second loopback origin standing in for the CDN,
  carrying ``X-Repo-Commit``, ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``; huggingface_hub does not
  follow a redirect to another origin on ``HEAD`` but downloads from the ``Location``.
- Missing repos, revisions and files get ``404`` with the hub's ``X-Error-Code`` (``EntryNotFound`` also carries
  ``X-Repo-Commit``, which huggingface_hub uses to remember the file's absence).
- The CDN honours ``Range`` (huggingface_hub resumes an interrupted download with ``Range: bytes=N-``).
- Anything else (huggingface_hub 2.x also asks ``GET /api/agent-harnesses`` once per process) gets a 404.

Both origins are ``http.server`` instances on 127.0.0.1 with ephemeral ports, served by daemon threads that a
fixture starts and stops. Everything has a timeout: huggingface_hub's metadata and download timeouts are set
to a few seconds, the servers drop idle keep-alive connections, and subprocesses are killed after a minute.

The first two tests run ``from_pretrained`` in a fresh interpreter configured only through environment
variables (``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``), exactly as a user would; huggingface_hub
reads them at import time. The others run in this process with ``huggingface_hub.constants`` patched, which is
faster and lets the broken-server tests skip huggingface_hub's one-second pause between download retries.

The last section needs no server: registered names and local-looking paths are resolved without any network
call, and the shipped checkpoint is package data (pyproject.toml, the built wheel).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from panda_fm import PandaConfig, PandaModel, PandaPipeline

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/name"
WEIGHTS = "model.safetensors"
LFS_FILES = frozenset({WEIGHTS})
HORIZON = 24  # beyond the tiny model's prediction_length of 16: exercises the rollout too
HF_TIMEOUT = 5  # seconds, for huggingface_hub's metadata (HEAD) and download (GET) requests
SUBPROCESS_TIMEOUT = 60
IDLE_CONNECTION_TIMEOUT = 5  # the servers close keep-alive connections idle this long

# --- a hub-compatible server on loopback --------------------------------------------------------------


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:  # HTTPServer's would do a reverse DNS lookup of the address
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the hub; every response carries a Content-Length
    timeout = IDLE_CONNECTION_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        hub: FakeHub = self.server.fake_hub  # type: ignore[attr-defined]
        role: str = self.server.role  # type: ignore[attr-defined]
        hub.record(role, self.command, self.path, self.headers.get("Range"))
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if role == "cdn":
            self._serve_cdn(hub, path, head)
        elif path.startswith("/api/models/"):
            self._serve_api(hub, path, head)
        else:
            self._serve_resolve(hub, path, head)

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, head: bool, extra: dict[str, str] | None = None) -> None:
        message = f"{code}: {self.path}".encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message.decode(), "Content-Type": "text/plain"}
        self._send(status, headers | (extra or {}), message, head)

    def _serve_api(self, hub: FakeHub, path: str, head: bool) -> None:
        """The repo info (``/revision/``) and file listing (``/tree/``) that snapshot_download reads."""
        match = re.fullmatch(
            r"/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)", path
        )
        if match is None or match["repo"] not in hub.repos:
            self._error(404, "RepoNotFound", head)
            return
        files, commit = hub.repos[match["repo"]], hub.commits[match["repo"]]
        if match["rev"] not in ("main", commit):
            self._error(404, "RevisionNotFound", head)
            return
        if match["kind"] == "revision":
            body = {"id": match["repo"], "sha": commit, "siblings": [{"rfilename": name} for name in files]}
        else:
            body = []
            for name, data in files.items():
                entry = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": name}
                if name in LFS_FILES:
                    entry["lfs"] = {
                        "oid": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    }
                body.append(entry)
        self._send(200, {"Content-Type": "application/json"}, json.dumps(body).encode(), head)

    def _serve_resolve(self, hub: FakeHub, path: str, head: bool) -> None:
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if match is None or match["repo"] not in hub.repos:
            self._error(404, "RepoNotFound", head)
            return
        files = hub.repos[match["repo"]]
        commit = hub.commits[match["repo"]]
        if match["rev"] not in ("main", commit):
            self._error(404, "RevisionNotFound", head)
            return
        name = match["file"]
        if name not in files:
            self._error(404, "EntryNotFound", head, {"X-Repo-Commit": commit})
            return
        data = files[name]
        if name in LFS_FILES:
            sha256 = hashlib.sha256(data).hexdigest()
            headers = {
                "Location": f"{hub.cdn_url}/cdn/{sha256}",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{_git_blob_sha1(data)}"',  # the hub's ETag of an LFS file is its pointer's
            }
            self._send(302, headers, b"", head)
            return
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{_git_blob_sha1(data)}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        self._send(200, headers, data, head)

    def _serve_cdn(self, hub: FakeHub, path: str, head: bool) -> None:
        match = re.fullmatch(r"/cdn/(?P<sha>[0-9a-f]{64})", path)
        data = hub.blobs.get(match["sha"]) if match else None
        if data is None:
            self._send(404, {"Content-Type": "text/plain"}, b"no such blob", head)
            return
        headers = {
            "ETag": f'"{match["sha"]}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "binary/octet-stream",
        }
        status, body = 200, data
        requested = self.headers.get("Range")
        if requested:
            got = re.fullmatch(r"bytes=(\d+)-(\d*)", requested.strip())
            start = int(got[1]) if got else len(data)
            end = min(int(got[2]), len(data) - 1) if got and got[2] else len(data) - 1
            if start > end:
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
                return
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if head or hub.drop_after is None:
            self._send(status, headers, body, head)
            return
        # A broken CDN: the full Content-Length, then part of the body, then the connection closes. The first
        # request gets `drop_after` bytes, resumed ones none: huggingface_hub resets its retry budget whenever a
        # byte arrives, so a CDN that keeps delivering a little would keep it retrying for ever.
        sent = body[: hub.drop_after] if hub.drops == 0 else b""
        hub.drops += 1
        self._send(status, headers | {"Content-Length": str(len(body))}, b"", head=True)
        self.wfile.write(sent)
        self.wfile.flush()
        self.close_connection = True


class FakeHub:
    """A hub origin and a CDN origin on loopback serving ``repos`` (repo id -> file name -> content)."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {
            repo: hashlib.sha1(
                repr(sorted((n, _git_blob_sha1(d)) for n, d in files.items())).encode()
            ).hexdigest()
            for repo, files in repos.items()
        }
        self.blobs = {hashlib.sha256(d).hexdigest(): d for files in repos.values() for d in files.values()}
        self.drop_after: int | None = None  # set: the CDN drops every download (see _Handler._serve_cdn)
        self.drops = 0
        self.requests: list[tuple[str, str, str, str | None]] = []  # (origin, method, path, Range)
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        for role in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.fake_hub = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            self._servers.append(server)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def record(self, *request: str | None) -> None:
        with self._lock:
            self.requests.append(request)  # type: ignore[arg-type]

    def start(self) -> FakeHub:
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening sockets (idempotent): afterwards connections are refused."""
        if self._stopped:
            return
        self._stopped = True
        for server, thread in zip(self._servers, self._threads, strict=False):  # no threads: never started
            server.shutdown()
            thread.join(timeout=5)
        for server in self._servers:
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def hub_server():
    """Start FakeHubs serving a repo dict; every one started is stopped at teardown."""
    started: list[FakeHub] = []

    def start(repos: dict[str, dict[str, bytes]]) -> FakeHub:
        hub = FakeHub(repos).start()
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


# --- the checkpoint and its reference forecast ---------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = PandaConfig(
        context_length=64,
        prediction_length=16,
        patch_length=8,
        patch_stride=8,
        d_model=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        num_poly_feats=4,
        poly_degrees=2,
        num_rff=16,
    )
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    PandaPipeline(PandaModel(cfg)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def repo_files(checkpoint: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(checkpoint.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def context() -> np.ndarray:
    t = np.arange(100, dtype=np.float64)[:, None]
    rng = np.random.default_rng(0)
    return (np.sin(t / np.array([5.0, 7.0, 11.0])) + 0.05 * rng.standard_normal((100, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def local_forecast(checkpoint: Path, context: np.ndarray) -> np.ndarray:
    return PandaPipeline.from_pretrained(checkpoint).predict(context, HORIZON)


def _cached_files(cache: Path) -> dict[str, list[Path]]:
    """The cache's snapshot entries, blobs and leftovers of interrupted downloads."""
    return {
        "snapshots": sorted(p for p in cache.rglob("snapshots/*/*")),
        "blobs": sorted(p for p in cache.rglob("blobs/*")),
        "incomplete": sorted(p for p in cache.rglob("*.incomplete")),
    }


# --- in a fresh interpreter, configured through the environment ----------------------------------------

_FORECAST_SCRIPT = """
import sys
import numpy as np
from panda_fm import PandaPipeline
from panda_fm.hub import resolve_checkpoint

repo_id, context_path, out_path, horizon = sys.argv[1:]
pipe = PandaPipeline.from_pretrained(repo_id)
np.save(out_path, pipe.predict(np.load(context_path), int(horizon)))
print(resolve_checkpoint(repo_id))
"""


def _run_forecast(tmp_path: Path, context: np.ndarray, env: dict[str, str]) -> tuple[np.ndarray, Path]:
    """from_pretrained(REPO_ID) + predict in a subprocess with only ``env`` configuring huggingface_hub."""
    context_path, out_path = tmp_path / "context.npy", tmp_path / "forecast.npy"
    np.save(context_path, context)
    out_path.unlink(missing_ok=True)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_")) and "proxy" not in k.lower()
    }
    base |= {
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "NO_PROXY": "127.0.0.1,localhost",
        "HF_HOME": str(tmp_path / "hf_home"),  # no token, no user config
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_ETAG_TIMEOUT": str(HF_TIMEOUT),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(HF_TIMEOUT),
    }
    result = subprocess.run(
        [sys.executable, "-c", _FORECAST_SCRIPT, REPO_ID, str(context_path), str(out_path), str(HORIZON)],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return np.load(out_path), Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, repo_files, context):
    """Download REPO_ID from a FakeHub into an empty cache in a subprocess; the server is stopped afterwards."""
    work = tmp_path_factory.mktemp("download")
    cache = work / "hf_cache"
    assert not cache.exists()
    with FakeHub({REPO_ID: repo_files}) as hub:
        forecast, resolved = _run_forecast(
            work, context, {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache)}
        )
    return {"cache": cache, "forecast": forecast, "resolved": resolved, "hub": hub}


@pytest.mark.slow
def test_download_into_empty_cache_and_forecast(downloaded, repo_files, local_forecast):
    hub, cache = downloaded["hub"], downloaded["cache"]
    np.testing.assert_array_equal(downloaded["forecast"], local_forecast)

    # main was resolved to its commit (once per call: the script resolves twice) and the commit's files listed
    # once (then cached), then every checkpoint file came over the wire at that commit: metadata from the hub,
    # the weights from the "CDN"
    commit = hub.commits[REPO_ID]
    paths = [path.split("?")[0] for _, _, path, _ in hub.requests]
    assert paths.count(f"/api/models/{REPO_ID}/revision/main") == 2
    assert paths.count(f"/api/models/{REPO_ID}/tree/{commit}") == 1
    for name in repo_files:
        assert ("hub", "HEAD", f"/{REPO_ID}/resolve/{commit}/{name}", None) in hub.requests
    weights_url = f"/cdn/{hashlib.sha256(repo_files[WEIGHTS]).hexdigest()}"
    assert ("cdn", "GET", weights_url, None) in hub.requests
    assert len(hub.requests) <= 4 * len(repo_files)  # bounded: no retry storms

    # ... into the hub cache layout, byte for byte, with nothing half-written left behind
    snapshot = cache / "models--org--name" / "snapshots" / commit
    assert downloaded["resolved"] == snapshot
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(repo_files)
    for name, data in repo_files.items():
        assert (snapshot / name).read_bytes() == data
    assert (cache / "models--org--name" / "refs" / "main").read_text() == commit
    assert _cached_files(cache)["incomplete"] == []


@pytest.mark.slow
def test_offline_loads_from_cache(downloaded, context, hub_server, tmp_path):
    """HF_HUB_OFFLINE=1 with the download server stopped: the cache alone gives the identical forecast.

    huggingface_hub also falls back to the cache when the server is merely unreachable, so HF_ENDPOINT points
    at a live sentinel server that records every request: it must get none.
    """
    sentinel = hub_server({})
    env = {"HF_ENDPOINT": sentinel.url, "HF_HUB_CACHE": str(downloaded["cache"]), "HF_HUB_OFFLINE": "1"}
    forecast, resolved = _run_forecast(tmp_path, context, env)
    np.testing.assert_array_equal(forecast, downloaded["forecast"])
    assert resolved == downloaded["resolved"]
    assert sentinel.requests == []


# --- in this process, huggingface_hub.constants patched ------------------------------------------------


class _NoSleepTime:
    """huggingface_hub.file_download's ``time`` module without the one-second pause between retries."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


class HubEnv:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, constants, cache: Path):
        self._monkeypatch, self._constants, self.cache = monkeypatch, constants, cache

    def point_at(self, endpoint: str) -> None:
        """What HF_ENDPOINT does at import time."""
        self._monkeypatch.setattr(self._constants, "ENDPOINT", endpoint)
        self._monkeypatch.setattr(
            self._constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )

    def offline(self, value: bool) -> None:
        """What HF_HUB_OFFLINE does at import time."""
        self._monkeypatch.setattr(self._constants, "HF_HUB_OFFLINE", value)


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    from huggingface_hub import close_session, constants, file_download

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    close_session()  # a fresh HTTP client (proxy settings), no keep-alive connections from other tests
    env = HubEnv(monkeypatch, constants, tmp_path / "hf_cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(env.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", HF_TIMEOUT)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", HF_TIMEOUT)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    # huggingface_hub may fetch {endpoint}/api/agent-harnesses once per process (FakeHub answers 404) and
    # would cache a successful answer under HF_HOME: keep that out of the user's home
    monkeypatch.setattr(
        constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf_home" / "agent_harnesses.json"), raising=False
    )
    monkeypatch.setattr(file_download, "time", _NoSleepTime())
    yield env
    close_session()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_local_directory_never_touches_the_network(
    hub_env, hub_server, monkeypatch, checkpoint, context, local_forecast
):
    import huggingface_hub

    sentinel = hub_server({REPO_ID: {}})
    hub_env.point_at(sentinel.url)

    def no_download(*args, **kwargs):
        raise AssertionError(f"a hub download was asked for a local directory: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    forecast = PandaPipeline.from_pretrained(checkpoint).predict(context, HORIZON)
    np.testing.assert_array_equal(forecast, local_forecast)
    assert sentinel.requests == []

    hub_env.point_at(_closed_port_url())  # no server at all: still no error
    PandaPipeline.from_pretrained(str(checkpoint))
    assert not hub_env.cache.exists()


def _assert_no_usable_weights(hub_env: HubEnv, repo_files: dict[str, bytes]) -> None:
    """Nothing cached that from_pretrained could load as weights: every blob is a complete, correct file."""
    cached = _cached_files(hub_env.cache)
    assert cached["incomplete"] == []
    assert WEIGHTS not in [p.name for p in cached["snapshots"]]
    served = set(repo_files.values())
    for blob in cached["blobs"]:
        assert blob.read_bytes() in served, f"{blob} is not a complete checkpoint file"
    assert hashlib.sha256(repo_files[WEIGHTS]).hexdigest() not in [p.name for p in cached["blobs"]]


def _download_from_dropping_server(hub_env, hub_server, repo_files) -> FakeHub:
    hub = hub_server({REPO_ID: repo_files})
    hub.drop_after = len(repo_files[WEIGHTS]) // 2
    hub_env.point_at(hub.url)
    started = time.monotonic()
    with pytest.raises((OSError, ValueError)) as info:
        PandaPipeline.from_pretrained(REPO_ID)
    assert time.monotonic() - started < 4 * HF_TIMEOUT
    message = str(info.value)
    assert REPO_ID in message and WEIGHTS in message, message
    assert re.search(r"RemoteProtocolError|closed|disconnect|incomplete", message, re.IGNORECASE), message
    assert 1 <= hub.drops <= 10  # the first cut plus huggingface_hub's bounded resume attempts
    return hub


def test_dropped_connection_gives_clear_error_and_caches_nothing(hub_env, hub_server, repo_files):
    _download_from_dropping_server(hub_env, hub_server, repo_files)
    _assert_no_usable_weights(hub_env, repo_files)

    hub_env.offline(True)  # before any successful download, the cache cannot serve the checkpoint
    with pytest.raises(OSError) as info:
        PandaPipeline.from_pretrained(REPO_ID)
    message = str(info.value)
    assert REPO_ID in message and WEIGHTS in message, message
    assert "not a panda_fm checkpoint" not in message, (
        message
    )  # the file exists on the hub: say it is not cached
    assert "cached" in message, message
    _assert_no_usable_weights(hub_env, repo_files)


def test_download_after_dropped_connection_succeeds(hub_env, hub_server, repo_files, context, local_forecast):
    hub = _download_from_dropping_server(hub_env, hub_server, repo_files)

    hub.drop_after = None  # the server recovers
    forecast = PandaPipeline.from_pretrained(REPO_ID).predict(context, HORIZON)
    np.testing.assert_array_equal(forecast, local_forecast)

    hub.stop()
    hub_env.offline(True)
    forecast = PandaPipeline.from_pretrained(REPO_ID).predict(context, HORIZON)
    np.testing.assert_array_equal(forecast, local_forecast)
    snapshot = hub_env.cache / "models--org--name" / "snapshots" / hub.commits[REPO_ID]
    assert (snapshot / WEIGHTS).read_bytes() == repo_files[WEIGHTS]


def test_offline_without_any_cache_says_so(hub_env, hub_server):
    sentinel = hub_server({})
    hub_env.point_at(sentinel.url)
    hub_env.offline(True)
    with pytest.raises(OSError) as info:
        PandaPipeline.from_pretrained(REPO_ID)
    message = str(info.value)
    assert REPO_ID in message and "config.json" in message and "cached" in message, message
    assert "offline mode is on" in message and "HF_HUB_OFFLINE=1" in message, message
    assert "not a panda_fm checkpoint" not in message, message
    assert sentinel.requests == []


def test_optional_files_missing_on_the_hub(hub_env, hub_server, repo_files, context, local_forecast):
    """A repo with only config.json and model.safetensors downloads, and then loads offline."""
    minimal = {name: repo_files[name] for name in ("config.json", WEIGHTS)}
    hub = hub_server({REPO_ID: minimal})
    hub_env.point_at(hub.url)
    forecast = PandaPipeline.from_pretrained(REPO_ID).predict(context, HORIZON)
    np.testing.assert_array_equal(forecast, local_forecast)

    hub.stop()
    hub_env.offline(True)
    forecast = PandaPipeline.from_pretrained(REPO_ID).predict(context, HORIZON)
    np.testing.assert_array_equal(forecast, local_forecast)


def test_repo_without_weights_is_not_a_checkpoint(hub_env, hub_server, repo_files):
    hub = hub_server({REPO_ID: {"config.json": repo_files["config.json"]}})
    hub_env.point_at(hub.url)
    with pytest.raises(FileNotFoundError, match=r"has no model\.safetensors"):
        PandaPipeline.from_pretrained(REPO_ID)


# --- registered names and local paths: resolved before any network call; the shipped checkpoint as package data


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks the hub."""
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError(f"the hub was asked: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)


def test_registered_name_loads_the_shipped_checkpoint_from_any_directory(no_hub, monkeypatch, tmp_path):
    from panda_fm.hub import REGISTERED_CHECKPOINTS, resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    assert "panda-fm-small" in REGISTERED_CHECKPOINTS
    directory = resolve_checkpoint("panda-fm-small")
    # in this (editable) install, the package data is the repository's checkpoints/ directory itself
    assert directory.resolve() == (ROOT / "checkpoints" / "panda-fm-small").resolve()
    pipe = PandaPipeline.from_pretrained("panda-fm-small")
    assert pipe.model.num_parameters() > 1_000_000 and pipe.info["name"] == "panda-fm-small"


def test_a_local_directory_wins_over_the_registered_name_it_shadows(
    no_hub, monkeypatch, tmp_path, checkpoint
):
    import shutil

    from panda_fm.hub import resolve_checkpoint

    shutil.copytree(checkpoint, tmp_path / "panda-fm-small")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("panda-fm-small") == Path("panda-fm-small")
    assert PandaPipeline.from_pretrained("panda-fm-small").model.config.d_model == 32  # the tiny one


@pytest.mark.parametrize(
    "name",
    [
        "checkpoints/panda-fm-small",  # the repository's path, from outside the repository
        "./nope",
        "../nope",
        "/nonexistent/panda",
        "~/nonexistent-panda-checkpoint",
        "nope/",
        "a/b/c",
        "a\\b",
        "exists/nope",  # exists/ is a directory here
        "panda-fm-smal",  # neither a registered name nor org/name
        "org/bad name",  # not a valid hub id
        Path("org/name"),  # a path object is a path
    ],
    ids=str,
)
def test_a_missing_local_path_fails_at_once_naming_it(no_hub, monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        PandaPipeline.from_pretrained(name)
    message = str(info.value)
    assert repr(str(name)) in message and str(tmp_path) in message and "'panda-fm-small'" in message, message


def test_a_file_is_not_a_checkpoint(no_hub, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a checkpoint directory"):
        PandaPipeline.from_pretrained(tmp_path / "model.safetensors")


def test_a_hub_id_still_goes_to_the_hub(monkeypatch, tmp_path):
    import huggingface_hub

    asked = []

    def offline_download(repo_id, **kwargs):
        asked.append(repo_id)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as info:
        PandaPipeline.from_pretrained(REPO_ID)
    assert asked == [REPO_ID]
    message = str(info.value)
    assert "is not cached and offline mode is on" in message and str(tmp_path) in message, message


def test_pyproject_ships_every_package_and_the_registered_checkpoints():
    """pyproject.toml lists its packages (panda_fm.checkpoints lies outside panda_fm/): the list must be whole,
    and its package-data globs must match every file of every registered checkpoint."""
    import fnmatch

    from setuptools import find_namespace_packages

    from panda_fm.hub import REGISTERED_CHECKPOINTS

    tomllib = pytest.importorskip("tomllib")
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_namespace_packages(where=str(ROOT), include=["panda_fm*"]))
    assert set(setuptools_cfg["packages"]) == found | {"panda_fm.checkpoints"}, (
        "add the missing package to [tool.setuptools] packages in pyproject.toml"
    )
    assert setuptools_cfg["package-dir"] == {"panda_fm.checkpoints": "checkpoints"}
    globs = setuptools_cfg["package-data"]["panda_fm.checkpoints"]
    for name in REGISTERED_CHECKPOINTS:
        files = [p for p in (ROOT / "checkpoints" / name).iterdir() if not p.name.startswith(".")]
        assert {p.name for p in files} >= {"config.json", WEIGHTS, "README.md", "training_info.json"}
        for path in files:
            relative = f"{name}/{path.name}"
            assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not package data"


@pytest.mark.slow
def test_the_wheel_holds_the_registered_checkpoints(tmp_path):
    """A wheel built from (a copy of) the source tree carries the checkpoint files, byte for byte."""
    import importlib.util
    import shutil
    import zipfile

    from panda_fm.hub import REGISTERED_CHECKPOINTS

    src = tmp_path / "src"  # a copy, so the build writes nothing into the working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", ".*")
    shutil.copytree(ROOT / "panda_fm", src / "panda_fm", ignore=ignore)
    shutil.copytree(ROOT / "checkpoints", src / "checkpoints", ignore=ignore)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(src),
        "--no-deps",
        "-q",
        "-w",
        str(tmp_path),
        *isolation,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("panda_fm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "panda_fm/checkpoints/__init__.py" in names
        for name in REGISTERED_CHECKPOINTS:
            for path in (ROOT / "checkpoints" / name).iterdir():
                if not path.name.startswith("."):
                    assert archive.read(f"panda_fm/checkpoints/{name}/{path.name}") == path.read_bytes()
    assert wheel.stat().st_size < 40e6  # the checkpoint once, compressed
