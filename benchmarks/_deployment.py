"""A deployment on loopback, as an operator runs one: several ``coherency server run``
instances on one PostgreSQL database, blobs on S3 (moto's server, in this process),
behind Debian's nginx.

Used by the load benchmark (`benchmarks._bench_load`) and the deployment tests
(``tests/server/test_deployment.py``)::

    with Deployment.running(folder, database_url, instances=2) as deployment:
        token = deployment.enrolment_token("clinic-1")
        client.enroll(deployment.url, token)   # through nginx
        deployment.kill(0)                     # SIGKILL one instance

Each instance has a data folder of its own; they share the key files (token signing,
artifact signing, sealing secrets) and the payment sandbox's record through the
``COHERENCY_SERVER_*`` variables, as separate machines would share a mounted secret.
Everything listens on 127.0.0.1 and lives under the given folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from sync_server import Settings

__all__ = [
    "NGINX",
    "Deployment",
    "Instance",
    "Nginx",
    "free_port",
    "fresh_database",
    "metric",
    "nginx_config",
    "nginx_unavailable",
    "rss_mb",
]

NGINX = Path(os.environ.get("COHERENCY_NGINX", "/usr/sbin/nginx"))
REPO = Path(__file__).resolve().parents[1]
ENV_PREFIX = "COHERENCY_SERVER_"
FAKE_S3_KEY_ID = "testing"
FAKE_S3_SECRET = "testing"  # moto takes any credentials
START_SECONDS = 90.0
# One client address (127.0.0.1, as nginx forwards it) speaks for every simulated
# device: the per-client limits meant for one device or person would trip.
SHARED_CLIENT_LIMITS: Mapping[str, str] = {
    "RATE_LOGIN_PER_CLIENT": "1000000",
    "RATE_ENROL_PER_CLIENT": "1000000",
    "RATE_DEVICE_LOGIN_PER_CLIENT": "1000000",
    "RATE_REFRESH_PER_CLIENT": "1000000",
    "FAILURES_FREE_PER_CLIENT": "1000000",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, in
    Prometheus's text format (0 if there are none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `server_url` (any database
    URL there), dropped at the end: one per deployment, since a database belongs to
    the one deployment whose signing key it records."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"coherency_deployment_{secrets.token_hex(4)}"
    admin_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def nginx_unavailable() -> str | None:
    """Why nginx cannot be used here, or None."""
    if not os.access(NGINX, os.X_OK):
        return f"nginx is not installed at {NGINX} (Debian: apt-get install nginx)"
    return None


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (workers), in MB; 0 if gone."""
    total_kb = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            with open(f"/proc/{current}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending += [int(p) for p in (task / "children").read_text().split()]
    return total_kb / 1024


def _wait_until_up(url: str, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready in {START_SECONDS:.0f} s:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _place(pid: int, cpus: set[int] | None) -> None:
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


# ---------------------------------------------------------------- server instances
@dataclass
class Instance:
    """One ``coherency server run`` process (its own process group) on loopback."""

    index: int
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its own address (not through nginx)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the instance (all its workers), in MB."""
        return rss_mb(self.pid) if self.alive else 0.0

    def log_lines(self) -> list[str]:
        """Its log (JSON lines on stderr) so far."""
        return self.log_path.read_text(errors="replace").splitlines()

    def kill(self) -> None:
        """SIGKILL the instance and its workers at once, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def instance_env(
    root: Path, index: int, settings: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    """The environment of instance `index`: the shared settings, its own data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHERENCY_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update({ENV_PREFIX + k: v for k, v in settings.items()})
    env[ENV_PREFIX + "DATA_DIR"] = str(root / f"instance-{index}")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- nginx
def nginx_config(prefix: Path, port: int, upstreams: list[int], *, read_timeout: float) -> str:
    """An nginx configuration load-balancing `upstreams` (loopback ports) on `port`.

    Long polls: reads wait up to `read_timeout` seconds (longer than the server's
    longest long poll) and responses are not buffered. A dead upstream (connection
    refused, or timed out connecting) is skipped for the next one; a request already
    sent to an instance that then died is not re-sent (the device retries it).
    """
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams
    )
    return f"""\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream coherency {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;  # the server enforces its own limits
        location / {{
            proxy_pass http://coherency;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 2s;
            proxy_send_timeout {read_timeout:.0f}s;
            proxy_read_timeout {read_timeout:.0f}s;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """nginx in the foreground on a loopback port, everything under `prefix`."""

    prefix: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        prefix: Path,
        upstreams: list[int],
        *,
        read_timeout: float,
        cpus: set[int] | None = None,
    ) -> Nginx:
        prefix.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, port, upstreams, read_timeout=read_timeout))
        log = prefix / "stderr.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _place(process.pid, cpus)
        nginx = cls(prefix, port, process)
        try:
            _wait_until_up(nginx.url, process, "nginx", prefix / "error.log")
        except BaseException:
            _stop(process)
            raise
        return nginx

    def stop(self) -> None:
        _stop(self.process)


# --------------------------------------------------------------------- deployment
@dataclass
class Deployment:
    """Server instances on one database and one bucket, behind nginx (`url`)."""

    root: Path
    database_url: str
    s3_endpoint: str
    bucket: str
    settings: Settings
    """The deployment's settings as an operator's tools see them (enrolment tokens)."""
    instances: list[Instance] = field(default_factory=list)
    nginx: Nginx | None = None
    cpus: set[int] | None = None

    @property
    def url(self) -> str:
        """Where devices connect: nginx."""
        assert self.nginx is not None
        return self.nginx.url

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        root: Path,
        database_url: str,
        *,
        instances: int = 2,
        workers: int = 1,
        long_poll_seconds: float = 20.0,
        proxy: bool = True,
        extra_env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> Iterator[Deployment]:
        """Start moto, `instances` servers of `workers` workers each and (with `proxy`)
        nginx in front of them; stop everything at the end, whatever happens.

        `cpus`: the CPUs the servers and nginx may run on (default: this process's).

        The first instance migrates the database and creates the shared key files and
        the bucket; the others start once it is ready.
        """
        from moto.server import ThreadedMotoServer

        if proxy and (reason := nginx_unavailable()):
            raise RuntimeError(reason)
        root.mkdir(parents=True, exist_ok=True)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access lines
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        shared = root / "shared"
        shared.mkdir(mode=0o700, exist_ok=True)
        values = {
            "DATABASE_URL": database_url,
            "BLOB_BACKEND": "s3",
            "S3_ENDPOINT_URL": f"http://{host}:{port}",
            "S3_BUCKET": f"coherency-{secrets.token_hex(6)}",
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": FAKE_S3_KEY_ID,
            "S3_SECRET_ACCESS_KEY": FAKE_S3_SECRET,
            "SIGNING_KEY_FILE": str(shared / "signing-key.pem"),
            "ARTIFACT_KEY_FILE": str(shared / "artifact-key.pem"),
            "SECRET_KEY_FILE": str(shared / "secret-key"),
            "PAYMENT_SANDBOX_FILE": str(shared / "sandbox-gateway.db"),
            "PAYMENT_WEBHOOK_SECRET": secrets.token_hex(32),
            "LONG_POLL_MAX_SECONDS": str(long_poll_seconds),
            "LOG_LEVEL": "INFO",
            **SHARED_CLIENT_LIMITS,
        }
        settings = Settings.model_validate(
            {"data_dir": shared, **{k.lower(): v for k, v in values.items()}}
        )
        deployment = cls(root, database_url, values["S3_ENDPOINT_URL"], values["S3_BUCKET"],
                         settings, cpus=cpus)  # fmt: skip
        try:
            for index in range(instances):
                deployment._start_instance(index, values, workers, extra_env or {})
            if proxy:
                deployment.nginx = Nginx.start(
                    root / "nginx",
                    [i.port for i in deployment.instances],
                    read_timeout=long_poll_seconds + 60,
                    cpus=cpus,
                )
            yield deployment
        finally:
            if deployment.nginx is not None:
                deployment.nginx.stop()
            for instance in deployment.instances:
                _stop(instance.process)
            moto.stop()

    def _start_instance(
        self, index: int, values: Mapping[str, str], workers: int, extra: Mapping[str, str]
    ) -> None:
        port = free_port()
        log_path = self.root / f"instance-{index}.log"
        command = [
            sys.executable, "-m", "cli.main", "server", "run",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--json",
        ]  # fmt: skip
        # stdout: the start-up description (--json); stderr: the JSON log lines.
        with open(self.root / f"instance-{index}.json", "ab") as out, open(log_path, "ab") as err:
            process = subprocess.Popen(
                command,
                env=instance_env(self.root, index, values, extra),
                cwd=self.root,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: kill() takes its workers too
            )
        _place(process.pid, self.cpus)  # before it starts its threads
        instance = Instance(index, port, self.root / f"instance-{index}", log_path, process)
        self.instances.append(instance)
        _wait_until_up(instance.url, process, f"server instance {index}", log_path)

    def enrolment_token(self, clinic: str) -> str:
        """A one-time token enrolling a device into the clinic named `clinic`."""
        from sync_server import issue_enrolment_token

        return issue_enrolment_token(self.settings, clinic=clinic, ttl=timedelta(hours=1)).token

    def kill(self, index: int) -> None:
        """SIGKILL instance `index` (nginx then skips it)."""
        self.instances[index].kill()

    def scrape(self, index: int) -> str:
        """Instance `index`'s ``/metrics``, asked directly (not through nginx)."""
        response = httpx.get(self.instances[index].url + "/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def metric(self, index: int, name: str, **labels: str) -> float:
        """The sum of instance `index`'s samples called `name` whose labels include
        `labels` (0 if there are none)."""
        return metric(self.scrape(index), name, **labels)

    def cleanup(self) -> None:
        """Remove the deployment's folder (logs included)."""
        shutil.rmtree(self.root, ignore_errors=True)
