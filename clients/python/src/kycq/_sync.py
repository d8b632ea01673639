"""The blocking client (pika)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, Dict, Optional, Set, Type
from urllib.parse import parse_qs, urlparse

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from . import _common
from ._common import Late, Options, decode_reply, prepared
from ._errors import KycqError, KycqTimeout
from ._model import CheckResult, Request


class Client:
    """A blocking connection to kycq's broker: publishes requests, receives their results.

    Create it with :meth:`Client.connect`; use it as a context manager or call :meth:`close`.

    **Threads.** pika's ``BlockingConnection`` is not thread-safe, so every call of a `Client`
    holds the client's lock: a client may be shared between threads, but its calls run one at a
    time (a `verify` waiting 60 s holds the others that long). For concurrent checks use one
    `Client` per thread, or :class:`kycq.AsyncClient`.

    **Idle connections.** pika sends heartbeats only while the client is inside a call. A
    connection the broker closed while the client was idle is noticed at the start of the next
    call, and the client connects again (same reply queue, so no result is lost) before
    publishing anything; a connection lost *during* a call raises `KycqError`.
    """

    def __init__(self, url: str, options: Options) -> None:
        self._url = url
        self._o = options
        self._lock = threading.RLock()
        self._late = Late()
        self._waiting: Set[str] = set()
        self._ready: Dict[str, CheckResult] = {}
        self._conn: Optional[pika.BlockingConnection] = None
        self._pub: Optional[BlockingChannel] = None
        self._closed = False
        self._open()

    @classmethod
    def connect(
        cls,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2f",
        *,
        prefix: str = "",
        request_exchange: str = _common.DEFAULT_REQUEST_EXCHANGE,
        reply_queue: Optional[str] = None,
        reply_queue_expires: float = _common.DEFAULT_REPLY_QUEUE_EXPIRES,
        timeout: float = _common.DEFAULT_TIMEOUT,
        confirm_timeout: float = _common.DEFAULT_CONFIRM_TIMEOUT,
    ) -> "Client":
        """Connect and declare the client's reply queue.

        - `prefix`: the workers' `topology.prefix`, prepended to `request_exchange` (and to the
          generated reply queue's name).
        - `reply_queue`: a durable queue of this name (give a stable name and results published
          while your process restarts wait there); default ``<prefix>kycq.client.<random>``.
        - `reply_queue_expires`: seconds RabbitMQ keeps the reply queue without a consumer.
        - `timeout`: seconds `verify` (and `result`) wait for a result.
        - `confirm_timeout`: seconds a publish may wait for the broker. pika's blocking
          connection cannot bound one confirm; this bounds how long the broker may keep the
          connection blocked (a resource alarm, when confirms stall) before the publish fails
          (unless the URL sets ``blocked_connection_timeout`` itself).
        """
        return cls(
            url,
            Options(prefix, request_exchange, reply_queue, reply_queue_expires, timeout, confirm_timeout),
        )

    # -- connection -------------------------------------------------------------------------

    def _open(self) -> None:
        params = pika.URLParameters(self._url)
        if "blocked_connection_timeout" not in parse_qs(urlparse(self._url).query):
            params.blocked_connection_timeout = self._o.confirm_timeout
        params.client_properties = {"connection_name": f"kycq python client ({self._o.reply_queue})"}
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as e:
            raise KycqError(f"cannot connect to RabbitMQ: {e!r}") from e
        try:
            sub = conn.channel()
            sub.queue_declare(
                self._o.reply_queue, durable=True, arguments=dict(self._o.queue_arguments)
            )
            sub.basic_consume(self._o.reply_queue, self._on_reply, consumer_tag="kycq-client")
            pub = conn.channel()
            pub.confirm_delivery()
        except pika.exceptions.AMQPError as e:
            _close_quietly(conn)
            raise KycqError(f"cannot declare the reply queue {self._o.reply_queue!r}: {e!r}") from e
        self._conn, self._pub = conn, pub

    def _alive(self) -> pika.BlockingConnection:
        """The connection, opened again when the broker closed it while the client was idle."""
        if self._closed:
            raise KycqError("the client is closed")
        conn = self._conn
        if conn is not None and conn.is_open:
            try:
                conn.process_data_events(0)
                return conn
            except pika.exceptions.AMQPConnectionError:
                pass
        if conn is not None:
            _close_quietly(conn)
        self._conn = self._pub = None
        self._open()
        assert self._conn is not None
        return self._conn

    def _on_reply(
        self, ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        got = decode_reply(props.correlation_id, body)
        if got is not None:
            key, r = got
            if key in self._waiting:
                self._ready[key] = r
            else:
                self._late.keep(key, r)
        # Acknowledged once handed over: a crash before this leaves it in the queue.
        ch.basic_ack(method.delivery_tag)

    # -- API --------------------------------------------------------------------------------

    @property
    def reply_queue(self) -> str:
        """The reply queue's name."""
        return self._o.reply_queue

    def verify(self, request: Request, timeout: Optional[float] = None) -> CheckResult:
        """Publish a request (confirmed) and wait for its result, up to `timeout` seconds (the
        client's `timeout` by default). Every outcome is a result — `completed`, `rejected`
        (invalid input, nothing billed) or `failed` (with its reason code); an exception means no
        result reached this client: `KycqTimeout` (the request was published; its result can
        still be had with `result`) or `KycqError`."""
        r, key, body = prepared(request)
        rid = r.request_id
        assert rid is not None
        with self._lock:
            self._alive()
            self._waiting.add(rid)
            try:
                self._publish(r, key, body)
                return self._receive(rid, self._o.timeout if timeout is None else timeout)
            finally:
                self._stop_waiting(rid)

    def submit(self, request: Request) -> str:
        """Publish a request without waiting; returns its `request_id` (generated unless given).
        Its result still goes to the result exchange, to Postgres and to this client's reply
        queue, for `result`."""
        r, key, body = prepared(request)
        assert r.request_id is not None
        with self._lock:
            self._alive()
            self._publish(r, key, body)
        return r.request_id

    def result(self, request_id: str, timeout: Optional[float] = None) -> CheckResult:
        """Wait up to `timeout` seconds for the result of a request this client published
        (returns at once when it has already arrived)."""
        with self._lock:
            self._alive()
            self._waiting.add(request_id)
            try:
                return self._receive(request_id, self._o.timeout if timeout is None else timeout)
            finally:
                self._stop_waiting(request_id)

    def close(self) -> None:
        """Close the connection (the reply queue stays until it expires)."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                _close_quietly(self._conn)
            self._conn = self._pub = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _stop_waiting(self, request_id: str) -> None:
        self._waiting.discard(request_id)
        r = self._ready.pop(request_id, None)
        if r is not None:  # came while the wait ended in an error: kept for `result`
            self._late.keep(request_id, r)

    def _publish(self, r: Request, routing_key: str, body: bytes) -> None:
        assert self._conn is not None
        if self._pub is None or not self._pub.is_open:
            try:
                self._pub = self._conn.channel()
                self._pub.confirm_delivery()
            except pika.exceptions.AMQPError as e:
                raise KycqError(f"rabbitmq: cannot open a channel: {e!r}") from e
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=r.request_id,
            correlation_id=r.request_id,
            reply_to=self._o.reply_queue,
        )
        target = self._o.exchange
        try:
            self._pub.basic_publish(target, routing_key, body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise KycqError(
                f"publish to `{target}` was not confirmed: unroutable: no queue is bound for "
                f"routing key {routing_key} (returned by the broker; run `kycq setup`)"
            ) from None
        except pika.exceptions.NackError:
            raise KycqError(
                f"publish to `{target}` was not confirmed: nack (refused: e.g. a full queue)"
            ) from None
        except pika.exceptions.ChannelClosedByBroker as e:
            self._pub = None
            raise KycqError(f"publish to `{target}` was refused: {e.reply_code} {e.reply_text}") from e
        except pika.exceptions.AMQPError as e:
            raise KycqError(f"publish to `{target}` failed: {e!r}") from e

    def _receive(self, request_id: str, timeout: float) -> CheckResult:
        found = self._late.take(request_id)
        if found is not None:
            return found
        assert self._conn is not None
        deadline = time.monotonic() + timeout
        while True:
            found = self._ready.pop(request_id, None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise KycqTimeout(request_id, timeout)
            try:
                self._conn.process_data_events(time_limit=left)
            except pika.exceptions.AMQPError as e:
                raise KycqError(
                    f"the connection was lost while waiting for {request_id}: {e!r}; its result "
                    "stays in the reply queue for a client that connects again with the same "
                    "reply_queue"
                ) from e


def _close_quietly(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass
