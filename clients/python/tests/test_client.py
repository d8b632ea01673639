"""Both clients against a real `kycq worker`, the kycq sandbox and RabbitMQ (conftest.py).

Every test runs twice: with `kycq.Client` (pika, called directly: it blocks this test's event
loop, which runs nothing else) and with `kycq.AsyncClient` (aio-pika). The identities are the
sandbox's documented ones (docs/src/reference/sandbox.md): name 张三, mobile 13812345678, the scenario
in the ID number's sequence code.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, List, Optional

import pika
import pika.exceptions
import pytest
import pytest_asyncio

from kycq import AsyncClient, CheckResult, Client, KycqError, KycqTimeout, Request

from .conftest import Deployment

NAME, MOBILE = "张三", "13812345678"
MATCH = "110105197001010011"  # 001: Tencent 0, match (billed); Alibaba match
NAME_MISMATCH = "110105197001019016"  # 901: -4 + PhoneNameMismatch (billed)
NO_RECORD = "110105197001019091"  # 909: -9 no record
DAILY_LIMIT = "110105197001019120"  # 912: -12, this identity's daily limit
CUT_502 = "11010519700101934X"  # 934: HTTP 502, body cut off: billing unknown, one call
SLOW = "110105197001019411"  # 941: 0 after the sandbox's --slow-ms
BAD_CHECKSUM = "110105197001010012"  # MATCH with a wrong check digit

MASKED_NAME, MASKED_MOBILE = "张*", "138****5678"


def masked_id(id_number: str) -> str:
    return id_number[:3] + "*" * 11 + id_number[-4:]


def mobile3(id_number: str, **kw: Any) -> Request:
    return Request(check="mobile3", name=NAME, id_number=id_number, mobile=MOBILE, **kw)


class Sync:
    """The blocking client behind the async test bodies."""

    def __init__(self, client: Client) -> None:
        self.c = client
        self.reply_queue = client.reply_queue

    async def verify(self, r: Request, timeout: Optional[float] = None) -> CheckResult:
        return self.c.verify(r, timeout=timeout)

    async def submit(self, r: Request) -> str:
        return self.c.submit(r)

    async def result(self, request_id: str, timeout: Optional[float] = None) -> CheckResult:
        return self.c.result(request_id, timeout=timeout)

    async def close(self) -> None:
        self.c.close()


async def connect(kind: str, kycq: Deployment, **options: Any) -> Any:
    options.setdefault("prefix", kycq.prefix)
    options.setdefault("timeout", 30.0)
    if kind == "sync":
        client: Any = Sync(Client.connect(kycq.amqp_url, **options))
    else:
        client = await AsyncClient.connect(kycq.amqp_url, **options)
    kycq.created(client.reply_queue)
    return client


@pytest_asyncio.fixture(params=["sync", "async"])
async def client(request: Any, kycq: Deployment) -> AsyncIterator[Any]:
    c = await connect(request.param, kycq)
    yield c
    await c.close()


def assert_times(r: CheckResult) -> None:
    now = datetime.now(timezone.utc)
    assert r.received_at.tzinfo is not None and r.completed_at.tzinfo is not None
    assert r.received_at.utcoffset() == timedelta(0)
    assert now - timedelta(minutes=5) < r.received_at <= r.completed_at <= now + timedelta(seconds=5)


def assert_generated_id(request_id: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id



async def test_a_match_has_every_field(client: Any, kycq: Deployment) -> None:
    calls = len(kycq.ledger())
    r = await client.verify(mobile3(MATCH))
    assert_generated_id(r.request_id)
    assert r.check == "mobile3"
    assert r.status == "completed"
    assert r.verdict == "match"
    assert r.reason_code == "match"
    assert r.reason.strip()
    assert r.billed == "yes"
    assert r.carrier == "cmcc"
    assert r.provider == "tencent"
    assert r.provider_code == "0"
    assert r.provider_request_id and r.provider_request_id.strip()
    assert r.attempts == 1
    assert (r.subject.name, r.subject.id_number, r.subject.mobile) == (MASKED_NAME, masked_id(MATCH), MASKED_MOBILE)
    assert_times(r)
    assert len(kycq.ledger()) == calls + 1


async def test_an_id2_match_through_alibaba(client: Any) -> None:
    r = await client.verify(Request(check="id2", name=NAME, id_number=MATCH))
    assert_generated_id(r.request_id)
    assert (r.check, r.status, r.verdict, r.reason_code, r.billed) == ("id2", "completed", "match", "match", "yes")
    assert r.reason.strip()
    assert (r.provider, r.provider_code, r.carrier, r.attempts) == ("alibaba", "1", None, 1)
    assert r.provider_request_id and r.provider_request_id.strip()
    assert (r.subject.name, r.subject.id_number, r.subject.mobile) == (MASKED_NAME, masked_id(MATCH), None)
    assert_times(r)


async def test_a_mismatch(client: Any) -> None:
    r = await client.verify(mobile3(NAME_MISMATCH))
    assert_generated_id(r.request_id)
    assert r.check == "mobile3"
    assert (r.status, r.verdict, r.reason_code, r.billed) == ("completed", "mismatch", "name_mismatch", "yes")
    assert r.reason.strip()
    assert (r.provider, r.provider_code, r.attempts) == ("tencent", "-4", 1)
    assert r.carrier == "cmcc"
    assert r.provider_request_id and r.provider_request_id.strip()
    assert (r.subject.name, r.subject.id_number, r.subject.mobile) == (
        MASKED_NAME, masked_id(NAME_MISMATCH), MASKED_MOBILE,
    )
    assert_times(r)


async def test_an_invalid_id_number_is_rejected_and_costs_nothing(client: Any, kycq: Deployment) -> None:
    calls = len(kycq.ledger())
    r = await client.verify(mobile3(BAD_CHECKSUM))
    assert_generated_id(r.request_id)
    assert r.check == "mobile3"
    assert (r.status, r.verdict, r.reason_code, r.billed) == ("rejected", None, "invalid_id_number", "no")
    assert r.reason.strip()
    assert (r.carrier, r.provider, r.provider_code, r.provider_request_id, r.attempts) == (None, None, None, None, 0)
    assert (r.subject.name, r.subject.id_number, r.subject.mobile) == (
        MASKED_NAME, masked_id(BAD_CHECKSUM), MASKED_MOBILE,
    )
    assert_times(r)
    assert len(kycq.ledger()) == calls


@pytest.mark.parametrize(
    "id_number, reason_code, billed, provider_code, carrier",
    [
        # The answer was lost after the call was sent: no code, no carrier, maybe billed.
        (CUT_502, "billing_unknown", "unknown", None, None),
        # Tencent refused this identity for today, naming the carrier.
        (DAILY_LIMIT, "identity_daily_limit", "no", "-12", "cmcc"),
    ],
)
async def test_failed(client: Any, kycq: Deployment, id_number: str, reason_code: str, billed: str,
                      provider_code: Optional[str], carrier: Optional[str]) -> None:
    calls = len(kycq.ledger())
    r = await client.verify(mobile3(id_number))
    assert_generated_id(r.request_id)
    assert r.check == "mobile3"
    assert (r.status, r.verdict, r.reason_code, r.billed) == ("failed", None, reason_code, billed)
    assert r.reason.strip()
    assert (r.provider, r.provider_code, r.attempts) == ("tencent", provider_code, 1)
    assert r.carrier == carrier
    assert (r.subject.name, r.subject.id_number, r.subject.mobile) == (
        MASKED_NAME, masked_id(id_number), MASKED_MOBILE,
    )
    assert_times(r)
    assert len(kycq.ledger()) == calls + 1  # one call, never repeated


async def test_submit_then_result(client: Any) -> None:
    request_id = await client.submit(mobile3(NO_RECORD))
    assert_generated_id(request_id)
    r = await client.result(request_id, timeout=30)
    assert r.request_id == request_id
    assert (r.check, r.status, r.verdict, r.reason_code, r.billed) == (
        "mobile3", "completed", "not_found", "no_record", "no",
    )
    assert (r.provider, r.provider_code, r.attempts) == ("tencent", "-9", 1)
    assert r.subject.id_number == masked_id(NO_RECORD)
    assert_times(r)


async def test_a_given_request_id_is_answered_idempotently(client: Any, kycq: Deployment) -> None:
    request_id = f"py-{uuid.uuid4().hex[:12]}"
    calls = len(kycq.ledger())
    first = await client.verify(mobile3(MATCH, request_id=request_id))
    assert first.request_id == request_id
    assert (first.status, first.verdict, first.billed, first.attempts) == ("completed", "match", "yes", 1)
    assert len(kycq.ledger()) == calls + 1
    # A retry with the same id (whitespace around it is trimmed, as the Rust client does) is
    # answered from the stored result: the same result, no second call, nothing billed again.
    second = await client.verify(mobile3(MATCH, request_id=f" {request_id} "))
    assert second == first
    assert len(kycq.ledger()) == calls + 1


async def test_a_timeout_raises_and_the_late_result_is_kept(client: Any) -> None:
    request_id = f"py-slow-{uuid.uuid4().hex[:12]}"
    with pytest.raises(KycqTimeout) as e:
        await client.verify(mobile3(SLOW, request_id=request_id), timeout=0.3)
    assert e.value.request_id == request_id
    assert e.value.timeout == 0.3
    assert request_id in str(e.value)
    assert isinstance(e.value, KycqError)
    r = await client.result(request_id, timeout=30)
    assert r.request_id == request_id
    assert (r.status, r.verdict, r.reason_code, r.billed, r.attempts) == ("completed", "match", "match", "yes", 1)


class ResultTap:
    """A private queue bound to the result exchange: tells when the worker published a result
    (its reply to the client's queue is published at the same moment)."""

    def __init__(self, kycq: Deployment) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(kycq.amqp_url))
        self.ch = self.conn.channel()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, kycq.prefix + "kyc.results", "result.#")

    def wait_for(self, request_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for _method, _props, body in self.ch.consume(self.queue, auto_ack=True, inactivity_timeout=0.2):
            if body is not None and json.loads(body)["request_id"] == request_id:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {request_id} on the result exchange")
        self.ch.cancel()

    def close(self) -> None:
        self.conn.close()


async def test_a_result_that_comes_while_nobody_waits_for_it_is_kept(client: Any, kycq: Deployment) -> None:
    late = f"py-late-{uuid.uuid4().hex[:12]}"
    tap = ResultTap(kycq)
    try:
        with pytest.raises(KycqTimeout):
            await client.verify(mobile3(SLOW, request_id=late), timeout=0.3)
        tap.wait_for(late)
    finally:
        tap.close()
    # The first result is in the reply queue before this check is published: the client
    # receives it while waiting for another one, with nobody waiting for it. It is kept, and
    # `result` answers at once.
    other = await client.verify(mobile3(MATCH))
    assert (other.status, other.verdict) == ("completed", "match")
    r = await client.result(late, timeout=0.05)
    assert (r.request_id, r.status, r.verdict, r.billed) == (late, "completed", "match", "yes")
    # Handed over once: it is not kept twice.
    with pytest.raises(KycqTimeout):
        await client.result(late, timeout=0.05)


async def test_result_of_nothing_times_out(client: Any) -> None:
    with pytest.raises(KycqTimeout) as e:
        await client.result("py-never-published", timeout=0.2)
    assert e.value.request_id == "py-never-published"


async def test_a_request_without_a_check_is_refused_before_publishing(client: Any) -> None:
    with pytest.raises(KycqError, match="no check named"):
        await client.verify(Request(check=" ", name=NAME, id_number=MATCH))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_unroutable_and_missing_exchanges_are_errors(kind: str, kycq: Deployment) -> None:
    # An exchange no queue is bound to: mandatory publishing makes the broker return it.
    conn = pika.BlockingConnection(pika.URLParameters(kycq.amqp_url))
    conn.channel().exchange_declare(kycq.prefix + "unbound.requests", "topic", durable=False, auto_delete=False)
    kycq.created_exchange(kycq.prefix + "unbound.requests")
    conn.close()
    client = await connect(kind, kycq, request_exchange="unbound.requests")
    try:
        with pytest.raises(KycqError, match="unroutable"):
            await client.verify(mobile3(MATCH))
        with pytest.raises(KycqError, match="unroutable"):
            await client.submit(mobile3(MATCH))
    finally:
        await client.close()
    # An exchange that does not exist (no worker ever ran with this prefix). The second publish
    # reaches the broker too: the client opened a new channel after the broker closed the first.
    client = await connect(kind, kycq, prefix=f"pytest-none-{uuid.uuid4().hex[:8]}.")
    try:
        with pytest.raises(KycqError, match="NOT_FOUND|404"):
            await client.verify(mobile3(MATCH), timeout=5)
        with pytest.raises(KycqError, match="NOT_FOUND|404"):
            await client.submit(mobile3(MATCH))
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_message_on_the_wire_and_the_reply_queue(kind: str, kycq: Deployment) -> None:
    # A queue of our own behind an exchange of our own, where the client publishes: what
    # exactly does it send?
    exchange, queue = f"{kycq.prefix}probe-{kind}.requests", f"{kycq.prefix}probe-{kind}"
    conn = pika.BlockingConnection(pika.URLParameters(kycq.amqp_url))
    ch = conn.channel()
    ch.exchange_declare(exchange, "topic", durable=False)
    kycq.created_exchange(exchange)
    ch.queue_declare(queue, durable=False)
    kycq.created(queue)
    ch.queue_bind(queue, exchange, "check.#")
    client = await connect(kind, kycq, request_exchange=f"probe-{kind}.requests", reply_queue_expires=120)
    try:
        request = mobile3(MATCH, request_id=f"py-wire-{kind}", scene_code="signup")
        assert await client.submit(request) == f"py-wire-{kind}"
        generated = await client.submit(mobile3(MATCH))
        assert_generated_id(generated)
    finally:
        await client.close()
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None, "nothing was published"
    assert (method.exchange, method.routing_key) == (exchange, "check.mobile3")
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2
    assert props.correlation_id == props.message_id == f"py-wire-{kind}"
    assert props.reply_to == client.reply_queue
    assert client.reply_queue.startswith(kycq.prefix + "kycq.client.")
    assert json.loads(body.decode("utf-8")) == {
        "request_id": f"py-wire-{kind}", "check": "mobile3", "name": NAME, "id_number": MATCH,
        "mobile": MOBILE, "scene_code": "signup",
    }
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert props.correlation_id == json.loads(body)["request_id"] == generated
    # The reply queue is durable with x-expires = 120 s: declaring it so again is accepted,
    # declaring it otherwise is refused by the broker.
    ch.queue_declare(client.reply_queue, durable=True, arguments={"x-expires": 120_000})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-expires"):
        ch.queue_declare(client.reply_queue, durable=True, arguments={"x-expires": 3_600_000})
    conn.close()


async def test_a_check_the_worker_does_not_know_is_rejected(client: Any) -> None:
    r = await client.verify(Request(check="id3", name=NAME, id_number=MATCH))  # type: ignore[arg-type]
    assert (r.check, r.status, r.verdict, r.reason_code, r.billed) == (None, "rejected", None, "invalid_request", "no")
    assert r.reason.strip()
    assert (r.provider, r.provider_code, r.provider_request_id, r.carrier, r.attempts) == (None, None, None, None, 0)


async def test_a_named_reply_queue_keeps_results_across_clients(kycq: Deployment) -> None:
    queue = f"{kycq.prefix}py-named-{uuid.uuid4().hex[:8]}"
    first = Client.connect(kycq.amqp_url, prefix=kycq.prefix, reply_queue=queue)
    kycq.created(queue)
    assert first.reply_queue == queue
    request_id = first.submit(mobile3(MATCH))
    first.close()
    # The result is published while no client consumes the queue; the next one gets it.
    async with await AsyncClient.connect(kycq.amqp_url, prefix=kycq.prefix, reply_queue=queue) as second:
        r = await second.result(request_id, timeout=30)
    assert (r.request_id, r.status, r.verdict) == (request_id, "completed", "match")


async def test_concurrent_verifies_on_one_async_client(kycq: Deployment) -> None:
    import asyncio

    async with await AsyncClient.connect(kycq.amqp_url, prefix=kycq.prefix, timeout=30) as client:
        kycq.created(client.reply_queue)
        ids: List[str] = [MATCH, NAME_MISMATCH, NO_RECORD, BAD_CHECKSUM]
        results = await asyncio.gather(*(client.verify(mobile3(i)) for i in ids))
    assert [r.reason_code for r in results] == ["match", "name_mismatch", "no_record", "invalid_id_number"]
    assert [r.subject.id_number for r in results] == [masked_id(i) for i in ids]


def test_the_sync_client_as_a_context_manager(kycq: Deployment) -> None:
    with Client.connect(kycq.amqp_url, prefix=kycq.prefix) as client:
        kycq.created(client.reply_queue)
        r = client.verify(replace(mobile3(MATCH), provider="tencent"))
        assert (r.status, r.provider) == ("completed", "tencent")
    with pytest.raises(KycqError, match="closed"):
        client.verify(mobile3(MATCH))


def test_one_sync_client_shared_by_threads(kycq: Deployment) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [MATCH, NAME_MISMATCH, NO_RECORD, BAD_CHECKSUM] * 2
    with Client.connect(kycq.amqp_url, prefix=kycq.prefix, timeout=30) as client:
        kycq.created(client.reply_queue)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda i: client.verify(mobile3(i)), ids))
    assert [r.subject.id_number for r in results] == [masked_id(i) for i in ids]
    assert [r.reason_code for r in results[:4]] == ["match", "name_mismatch", "no_record", "invalid_id_number"]


def close_connections_of(reply_queue: str) -> int:
    """Have the broker close the client's connection (named after its reply queue)."""
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("needs rabbitmqctl on this machine")
    if out.returncode != 0:
        pytest.skip(f"rabbitmqctl failed: {out.stderr.strip()}")
    pids = [line.split("\t")[0] for line in out.stdout.splitlines() if f"({reply_queue})" in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "closed by the kycq tests"],
                       capture_output=True, timeout=30, check=True)
    return len(pids)


def test_the_sync_client_connects_again_after_the_broker_closed_an_idle_connection(kycq: Deployment) -> None:
    with Client.connect(kycq.amqp_url, prefix=kycq.prefix, timeout=30) as client:
        kycq.created(client.reply_queue)
        assert client.verify(mobile3(MATCH)).status == "completed"
        request_id = client.submit(mobile3(NO_RECORD))
        assert close_connections_of(client.reply_queue) == 1
        time.sleep(0.5)
        # The result published meanwhile waited in the durable reply queue.
        assert client.result(request_id, timeout=30).reason_code == "no_record"
        assert client.verify(mobile3(NAME_MISMATCH)).reason_code == "name_mismatch"


async def test_the_async_client_fails_its_waiters_when_the_connection_is_lost(kycq: Deployment) -> None:
    client = await AsyncClient.connect(kycq.amqp_url, prefix=kycq.prefix, timeout=30)
    kycq.created(client.reply_queue)
    try:
        import asyncio

        request_id = await client.submit(mobile3(SLOW))  # published (confirmed); answered in 2 s
        waiting = asyncio.ensure_future(client.result(request_id))
        await asyncio.sleep(0.1)
        assert close_connections_of(client.reply_queue) == 1
        with pytest.raises(KycqError, match="connection was lost"):
            await asyncio.wait_for(waiting, 10)  # at once, not after the 30 s timeout
        with pytest.raises(KycqError):
            await client.verify(mobile3(MATCH))
    finally:
        await client.close()
