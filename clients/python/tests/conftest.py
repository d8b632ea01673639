"""A real `kycq sandbox` and `kycq worker` (child processes) on the real RabbitMQ, PostgreSQL and
Redis, under names of their own: topology prefix `pytest-<random>.`, database
`kycq_pytest_<random>`, Redis key prefix `kycq-pytest-<random>`. Everything is removed at the end but the two
processes' logs (target/py-test-logs/).

Environment: `KYCQ_BIN` (default `<repo>/target/debug/kycq`), `KYCQ_TEST_AMQP_URL`,
`KYCQ_TEST_PG_URL` (the server, database `postgres`), `KYCQ_TEST_REDIS` (`host:port`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pika
import pika.exceptions
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[3]
AMQP_URL = os.environ.get("KYCQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PG_URL = os.environ.get("KYCQ_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("KYCQ_TEST_REDIS", "127.0.0.1:6379")

# The topology's names (config/default.toml [topology]); each is an exchange, a queue or both.
TOPOLOGY = ["kyc.requests", "kyc.checks", "kyc.results", "kyc.dead", "kyc.checks.dead", "kyc.checks.wait"]

# The sandbox's documented local credentials (docs/src/reference/sandbox.md).
SANDBOX_ENV = {
    "KYCQ__PROVIDERS__TENCENT__SECRET_ID": "AKIDkycqsandbox",
    "KYCQ__PROVIDERS__TENCENT__SECRET_KEY": "kycq-sandbox-tencent-key",
    "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID": "LTAIkycqsandbox",
    "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET": "kycq-sandbox-alibaba-secret",
}

# The slow identity (941) answers after this long; kycq's provider timeout is longer, so its
# result comes, late: a client's short verify times out first.
SLOW_MS = 2000


def kycq_bin() -> Path:
    given = os.environ.get("KYCQ_BIN")
    path = Path(given) if given else REPO / "target" / "debug" / "kycq"
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not path.exists():
        pytest.exit(f"no kycq binary at {path}: build it (cargo build) or set KYCQ_BIN", returncode=2)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Deployment:
    """What the tests talk to."""

    amqp_url: str
    prefix: str
    sandbox_url: str
    worker_log: Path
    reply_queues: List[str] = field(default_factory=list)
    exchanges: List[str] = field(default_factory=list)

    def ledger(self) -> List[Dict[str, Any]]:
        """Every call the sandbox answered (GET /_sandbox/ledger)."""
        with urllib.request.urlopen(f"{self.sandbox_url}/_sandbox/ledger", timeout=10) as r:
            body = json.load(r)
        calls = body["calls"] if isinstance(body, dict) else body
        assert isinstance(calls, list)
        return calls

    def created(self, queue: str) -> None:
        """Remember a queue (a client's reply queue) for the clean-up."""
        self.reply_queues.append(queue)

    def created_exchange(self, exchange: str) -> None:
        """Remember an exchange a test declared, for the clean-up."""
        self.exchanges.append(exchange)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            pytest.exit(f"{what} exited early:\n{log.read_text(errors='replace')}", returncode=1)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.exit(f"{what} did not listen on {port}:\n{log.read_text(errors='replace')}", returncode=1)


def _wait_worker_consuming(queue: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker consumes its work queue (it declared the topology before that)."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.exit(f"kycq worker exited ({proc.returncode}):\n{log.read_text(errors='replace')}", returncode=1)
            ch = conn.channel()
            try:
                ok = ch.queue_declare(queue, passive=True)
                if ok.method.consumer_count > 0:
                    ch.close()
                    return
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass  # not declared yet
            time.sleep(0.2)
        pytest.exit(f"kycq worker did not start consuming {queue}:\n{log.read_text(errors='replace')}", returncode=1)
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _delete_topology(prefix: str, reply_queues: List[str], exchanges: List[str]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        for q in [prefix + n for n in TOPOLOGY] + reply_queues:
            ch = conn.channel()
            try:
                ch.queue_delete(q)
            except pika.exceptions.ChannelClosedByBroker:
                continue
            ch.close()
        for x in [prefix + n for n in TOPOLOGY] + exchanges:
            ch = conn.channel()
            try:
                ch.exchange_delete(x)
            except pika.exceptions.ChannelClosedByBroker:
                continue
            ch.close()
    finally:
        conn.close()


def _redis(command: List[str], sock: socket.socket, reader: Any) -> Any:
    """One command over RESP (enough for SCAN and DEL)."""
    out = f"*{len(command)}\r\n".encode()
    for part in command:
        b = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    sock.sendall(out)

    def read() -> Any:
        line = reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            if kind == b"-":
                raise RuntimeError(rest.decode())
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = reader.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected redis reply {line!r}")

    return read()


def _delete_redis_keys(prefix: str) -> None:
    host, port = REDIS.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        reader = sock.makefile("rb")
        cursor = "0"
        while True:
            cursor, keys = _redis(["SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"], sock, reader)
            if keys:
                _redis(["DEL", *keys], sock, reader)
            if cursor == "0":
                break


@pytest.fixture(scope="session")
def kycq() -> Iterator[Deployment]:
    binary = kycq_bin()
    run = uuid.uuid4().hex[:10]
    prefix = f"pytest-{run}."
    db = f"kycq_pytest_{run}"
    redis_prefix = f"kycq-pytest-{run}"
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    logs = Path(os.environ.get("KYCQ_TEST_LOG_DIR", REPO / "target" / "py-test-logs"))
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KYCQ_CONFIG_DIR": str(REPO / "config"),
        "KYCQ__LOG__LEVEL": "info",
        "KYCQ__AMQP__URL": AMQP_URL,
        "KYCQ__TOPOLOGY__PREFIX": prefix,
        "KYCQ__DATABASE__URL": f"{PG_URL}/{db}",
        "KYCQ__DATABASE__MAX_CONNECTIONS": "5",
        "KYCQ__REDIS__URL": f"redis://{REDIS}/",
        "KYCQ__REDIS__KEY_PREFIX": redis_prefix,
        "KYCQ__HTTP__LISTEN": "",
        "KYCQ__PII__KEY": f"pytest-pii-key-{uuid.uuid4().hex}",
        "KYCQ__ROUTES__MOBILE3": "tencent",
        "KYCQ__ROUTES__ID2": "alibaba",
        "KYCQ__ROUTES__ID2_PERIOD": "alibaba",
        "KYCQ__PROVIDERS__TENCENT__ENDPOINT": sandbox_url,
        "KYCQ__PROVIDERS__ALIBABA__ENDPOINT": sandbox_url,
        "KYCQ__PROVIDERS__TENCENT__TIMEOUT_MS": "10000",
        "KYCQ__RETRY__INITIAL_DELAY_MS": "20",
        "KYCQ__RETRY__MAX_DELAY_MS": "80",
        "KYCQ__WORKER__SHUTDOWN_GRACE_SECS": "5",
        **SANDBOX_ENV,
    }
    sandbox_log = logs / f"sandbox-{run}.log"
    worker_log = logs / f"worker-{run}.log"
    procs: List[subprocess.Popen[bytes]] = []
    deployment = Deployment(AMQP_URL, prefix, sandbox_url, worker_log)
    try:
        with open(sandbox_log, "wb") as out:
            sandbox = subprocess.Popen(
                [str(binary), "sandbox", "--listen", f"127.0.0.1:{port}", "--slow-ms", str(SLOW_MS)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        procs.append(sandbox)
        _wait_port(port, sandbox, sandbox_log, "kycq sandbox")
        with open(worker_log, "wb") as out:
            worker = subprocess.Popen(
                [str(binary), "worker"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        procs.append(worker)
        _wait_worker_consuming(prefix + "kyc.checks", worker, worker_log)
        yield deployment
        if worker.poll() is not None:
            print(worker_log.read_text(errors="replace"), file=sys.stderr)
            raise AssertionError(f"kycq worker exited during the tests ({worker.returncode})")
    finally:
        for p in reversed(procs):
            _stop(p)
        _delete_topology(prefix, deployment.reply_queues, deployment.exchanges)
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as pg:
            pg.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _delete_redis_keys(redis_prefix)


def pytest_report_header(config: Any) -> Optional[str]:
    return f"kycq binary: {os.environ.get('KYCQ_BIN', REPO / 'target' / 'debug' / 'kycq')}"
