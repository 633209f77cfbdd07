"""automerge-repo beside Coherency's initial sync (part of benchmark 4, `sync`).

automerge-repo (JavaScript, on Node) is the closest peer that syncs CRDT documents.
At N = 1,000 and 3,000 (at most `--scale`), in the same run and against the same
records:

- ours: a fresh, just enrolled device pulls the N records of a clinic from the real
  sync server (SQLite) with ``client.sync()``, as in ``sync.initial``;
- theirs: a Node "server" repo (`benchmarks/automerge_repo/bench.mjs`, storage on
  disk) holds one Automerge document per record (the same records, as plain JSON
  fields); a fresh "client" repo with its own disk storage asks for all N by URL over
  a loopback WebSocket until it holds them, flushed to its storage.

Both servers run on the other CPU, both clients on the pinned one; the two sides
alternate from repeat to repeat. Figures: ``sync.peer.automerge_repo.<N>``
(documents/s) and ``sync.initial_vs_automerge_repo.<N>`` (our records/s over theirs,
per repeat). Without node or npm, or when ``npm ci`` fails, they are reported missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks._common import progress

__all__ = [
    "NODE_PROJECT",
    "PEER_SIZES",
    "NodePeer",
    "PeerFailed",
    "names",
    "node_unavailable",
    "peer_sizes",
    "size_names",
]

PEER_SIZES = (1_000, 3_000)
NODE_PROJECT = Path(__file__).resolve().parent / "automerge_repo"
_NPM_SECONDS = 600.0
_NODE_SERVER_SECONDS = 300.0
_NODE_CLIENT_SECONDS = 600.0


class PeerFailed(RuntimeError):
    """automerge-repo itself failed (its client gave up on a document, or its server
    did not start): the peer's figures of that size are missing, ours still count."""


def peer_sizes(scale: int) -> list[int]:
    """The N of the side-by-side runs: 1,000 and 3,000, at most `scale`."""
    return sorted({min(scale, size) for size in PEER_SIZES})


def names(scale: int) -> list[str]:
    """The figures this module reports at `scale`, in table order."""
    return [name for n in peer_sizes(scale) for name in size_names(n)]


def size_names(n: int) -> tuple[str, str]:
    """The two figures of the side-by-side run at `n` documents."""
    return (f"sync.peer.automerge_repo.{n}", f"sync.initial_vs_automerge_repo.{n}")


# ---------------------------------------------------------------- Node
def node_unavailable() -> str | None:
    """Why automerge-repo cannot run here, or None (installs it with `npm ci` first)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return f"{'node' if node is None else 'npm'} is not installed (Node.js 18 or later)"
    if (NODE_PROJECT / "node_modules" / "@automerge" / "automerge-repo").is_dir():
        return None
    progress(f"sync[peer]: npm ci in {NODE_PROJECT}")
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_PROJECT,
            capture_output=True,
            text=True,
            timeout=_NPM_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm ci in {NODE_PROJECT.name} failed: {exc}"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return f"npm ci in {NODE_PROJECT.name} failed (exit {done.returncode}): {tail}"
    return None


def versions() -> dict[str, str]:
    """The installed versions of the pinned packages (from package-lock.json)."""
    lock = json.loads((NODE_PROJECT / "package-lock.json").read_text(encoding="utf-8"))
    wanted = json.loads((NODE_PROJECT / "package.json").read_text(encoding="utf-8"))
    packages = lock.get("packages", {})
    versions = {
        name: str(packages.get(f"node_modules/{name}", {}).get("version", "?"))
        for name in wanted["dependencies"]
    }
    versions["@automerge/automerge"] = str(
        packages.get("node_modules/@automerge/automerge", {}).get("version", "?")
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    versions["node"] = node.stdout.strip()
    return versions


@dataclass(slots=True)
class NodePeer:
    """`bench.mjs server` in a child process holding the records; `fetch_all` runs a
    fresh client against it."""

    process: subprocess.Popen[str]
    url: str
    urls_path: Path
    layout: dict[str, Any]

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, records_path: Path, storage: Path, place: Callable[[int], dict[str, Any]]
    ) -> Iterator[NodePeer]:
        """Start it on the records of `records_path` (a JSON array), put it where
        `place(pid)` says, wait until it serves, and stop it whatever happens."""
        log_path = storage.with_name("server.log")
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                ["node", "bench.mjs", "server", str(records_path), str(storage)],
                cwd=NODE_PROJECT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        try:
            layout = place(process.pid)
            layout = {
                "node_server_cpus": layout["server_cpus"],
                "node_client_cpus": layout["client_cpus"],
            }
            ready = _first_line(process, _NODE_SERVER_SECONDS, log_path)
            urls_path = records_path.with_name("urls.json")
            urls_path.write_text(json.dumps(ready["urls"]), encoding="utf-8")
            yield cls(process, f"ws://127.0.0.1:{ready['port']}", urls_path, layout)
        finally:
            _end(process)

    def fetch_all(self, storage: Path, n: int) -> tuple[float, float]:
        """A fresh client repo fetches every document; (its timed seconds, the
        process's wall seconds with Node's start-up)."""
        command = ["node", "bench.mjs", "client", self.url, str(self.urls_path), str(storage)]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                cwd=NODE_PROJECT,
                capture_output=True,
                text=True,
                timeout=_NODE_CLIENT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PeerFailed(
                f"the automerge-repo client did not finish within {_NODE_CLIENT_SECONDS} s"
            ) from None
        wall = time.perf_counter() - start
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
            what = errors[-1] if errors else f"exit status {done.returncode}"
            raise PeerFailed(f"the automerge-repo client failed ({what})\n{done.stderr[-2000:]}")
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        if answer["held"] != n:
            raise RuntimeError(
                f"sync benchmark (automerge-repo): the client holds {answer['held']} of {n}"
            )
        shutil.rmtree(storage, ignore_errors=True)
        return float(answer["seconds"]), wall


def _first_line(process: subprocess.Popen[str], timeout: float, log_path: Path) -> dict[str, Any]:
    """The server's ready line ({"port", "urls"})."""
    lines: list[str] = []
    stdout: IO[str] | None = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0].strip():
        _end(process)
        log = log_path.read_text(encoding="utf-8", errors="replace")
        raise PeerFailed(f"the automerge-repo server did not start: {log[-2000:]}")
    ready: dict[str, Any] = json.loads(lines[0])
    return ready


def _end(process: subprocess.Popen[str]) -> None:
    """Close its stdin (it shuts down), kill it if it does not."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    if process.stdout is not None:
        process.stdout.close()
