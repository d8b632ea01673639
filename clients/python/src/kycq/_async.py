"""The asyncio client (aio-pika)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Dict, Optional, Type

import aio_pika
import aio_pika.abc
import aiormq.exceptions
from pamqp.commands import Basic
from yarl import URL

from . import _common
from ._common import Late, Options, decode_reply, prepared
from ._errors import KycqError, KycqTimeout
from ._model import CheckResult, Request


class AsyncClient:
    """An asyncio connection to kycq's broker: publishes requests, receives their results.

    ``client = await AsyncClient.connect(url)``; use ``async with client:`` or
    ``await client.close()``. Any number of tasks of one event loop may call it at once.
    There is no automatic reconnection (as in the Rust client): after a lost connection calls
    raise `KycqError`; connect again (with a named `reply_queue` no result is lost meanwhile).
    """

    def __init__(
        self,
        options: Options,
        connection: aio_pika.abc.AbstractConnection,
    ) -> None:
        self._o = options
        self._conn = connection
        self._late = Late()
        self._pending: Dict[str, "asyncio.Future[CheckResult]"] = {}
        self._pub: Optional[aio_pika.abc.AbstractChannel] = None
        self._exchange: Optional[aio_pika.abc.AbstractExchange] = None
        self._pub_lock = asyncio.Lock()
        self._closed = False
        self._lost: Optional[str] = None

    @classmethod
    async def connect(
        cls,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2f",
        *,
        prefix: str = "",
        request_exchange: str = _common.DEFAULT_REQUEST_EXCHANGE,
        reply_queue: Optional[str] = None,
        reply_queue_expires: float = _common.DEFAULT_REPLY_QUEUE_EXPIRES,
        timeout: float = _common.DEFAULT_TIMEOUT,
        confirm_timeout: float = _common.DEFAULT_CONFIRM_TIMEOUT,
    ) -> "AsyncClient":
        """Connect and declare the client's reply queue (the options are
        :meth:`kycq.Client.connect`'s; `confirm_timeout` bounds each publish's confirm)."""
        o = Options(prefix, request_exchange, reply_queue, reply_queue_expires, timeout, confirm_timeout)
        try:
            amqp_url = URL(url)
            if "name" not in amqp_url.query:  # the connection's name in the management UI
                amqp_url = amqp_url.update_query(name=f"kycq python client ({o.reply_queue})")
            conn = await aio_pika.connect(amqp_url)
        except (aiormq.exceptions.AMQPError, OSError) as e:
            raise KycqError(f"cannot connect to RabbitMQ: {e!r}") from e
        client = cls(o, conn)
        conn.close_callbacks.add(client._on_connection_closed)
        try:
            sub = await conn.channel(publisher_confirms=False)
            queue = await sub.declare_queue(o.reply_queue, durable=True, arguments=dict(o.queue_arguments))
            await queue.consume(client._on_reply, consumer_tag="kycq-client")
        except aiormq.exceptions.AMQPError as e:
            await conn.close()
            raise KycqError(f"cannot declare the reply queue {o.reply_queue!r}: {e!r}") from e
        return client

    @property
    def reply_queue(self) -> str:
        """The reply queue's name."""
        return self._o.reply_queue

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got = decode_reply(message.correlation_id, message.body)
        if got is not None:
            key, r = got
            fut = self._pending.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(r)
            else:
                self._late.keep(key, r)
        # Acknowledged once handed over: a crash before this leaves it in the queue.
        await message.ack()

    def _on_connection_closed(self, _sender: object, exc: Optional[BaseException]) -> None:
        # Waiters learn at once that no result will come through this client.
        self._lost = repr(exc)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(KycqError(f"the connection was lost ({exc!r}): connect again"))
        self._pending.clear()

    async def verify(self, request: Request, timeout: Optional[float] = None) -> CheckResult:
        """Publish a request (confirmed) and wait for its result, up to `timeout` seconds (the
        client's `timeout` by default). See :meth:`kycq.Client.verify`."""
        r, key, body = prepared(request)
        rid = r.request_id
        assert rid is not None
        fut = self._wait_for(rid)
        try:
            await self._publish(r, key, body)
        except BaseException:
            self._forget(rid, fut)
            raise
        return await self._receive(rid, fut, self._o.timeout if timeout is None else timeout)

    async def submit(self, request: Request) -> str:
        """Publish a request without waiting; returns its `request_id` (generated unless
        given). See :meth:`kycq.Client.submit`."""
        r, key, body = prepared(request)
        assert r.request_id is not None
        await self._publish(r, key, body)
        return r.request_id

    async def result(self, request_id: str, timeout: Optional[float] = None) -> CheckResult:
        """Wait up to `timeout` seconds for the result of a request this client published
        (returns at once when it has already arrived)."""
        fut = self._wait_for(request_id)
        return await self._receive(request_id, fut, self._o.timeout if timeout is None else timeout)

    async def close(self) -> None:
        """Close the connection (the reply queue stays until it expires)."""
        self._closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(KycqError("the client was closed"))
        self._pending.clear()
        await self._conn.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    # -- internals --------------------------------------------------------------------------

    def _wait_for(self, request_id: str) -> "asyncio.Future[CheckResult]":
        self._check_open()
        fut: "asyncio.Future[CheckResult]" = asyncio.get_running_loop().create_future()
        found = self._late.take(request_id)
        if found is not None:
            fut.set_result(found)
        else:
            old = self._pending.get(request_id)
            if old is not None and not old.done():
                raise KycqError(f"already waiting for {request_id} on this client")
            self._pending[request_id] = fut
        return fut

    def _check_open(self) -> None:
        if self._closed:
            raise KycqError("the client is closed")
        if self._lost is not None or self._conn.is_closed:
            raise KycqError(f"the connection was lost ({self._lost}): connect again")

    def _forget(self, request_id: str, fut: "asyncio.Future[CheckResult]") -> None:
        if self._pending.get(request_id) is fut:
            del self._pending[request_id]
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self._late.keep(request_id, fut.result())

    async def _receive(
        self, request_id: str, fut: "asyncio.Future[CheckResult]", timeout: float
    ) -> CheckResult:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self._forget(request_id, fut)
            raise KycqTimeout(request_id, timeout) from None
        except BaseException:
            self._forget(request_id, fut)
            raise

    async def _channel(self) -> aio_pika.abc.AbstractExchange:
        async with self._pub_lock:
            if self._pub is None or self._pub.is_closed or self._exchange is None:
                self._check_open()
                self._pub = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await self._pub.get_exchange(self._o.exchange, ensure=False)
            return self._exchange

    async def _publish(self, r: Request, routing_key: str, body: bytes) -> None:
        self._check_open()
        target = self._o.exchange
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=r.request_id,
            correlation_id=r.request_id,
            reply_to=self._o.reply_queue,
        )
        try:
            exchange = await self._channel()
            confirm = await exchange.publish(
                message, routing_key, mandatory=True, timeout=self._o.confirm_timeout
            )
        except aiormq.exceptions.PublishError:
            raise KycqError(
                f"publish to `{target}` was not confirmed: unroutable: no queue is bound for "
                f"routing key {routing_key} (returned by the broker; run `kycq setup`)"
            ) from None
        except aiormq.exceptions.DeliveryError:
            raise KycqError(
                f"publish to `{target}` was not confirmed: nack (refused: e.g. a full queue)"
            ) from None
        except asyncio.TimeoutError:
            raise KycqError(f"publish to `{target}` was not confirmed: timed out") from None
        except aiormq.exceptions.ChannelClosed as e:
            self._exchange = None
            raise KycqError(f"publish to `{target}` was refused: {e!r}") from e
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as e:
            self._exchange = None
            raise KycqError(f"publish to `{target}` failed: {e!r}") from e
        except asyncio.CancelledError:
            # aiormq cancels a confirm the lost connection will never bring; a cancellation of
            # the caller's own task goes on as it is.
            if self._lost is None and not self._conn.is_closed:
                raise
            self._exchange = None
            raise KycqError(
                f"publish to `{target}` was not confirmed: the connection was lost ({self._lost})"
            ) from None
        if not isinstance(confirm, Basic.Ack):
            raise KycqError(f"publish to `{target}` was not confirmed: {confirm!r}")
