"""What can go wrong for a client."""

from __future__ import annotations


class KycqError(Exception):
    """RabbitMQ refused, failed or did not confirm a publish (a nack, an unroutable message, an
    exchange that does not exist, no confirm within `confirm_timeout`), the connection was lost,
    a request cannot be sent as it is, or a result could not be read."""


class KycqTimeout(KycqError):
    """No result within the timeout. The request *was* published: its result will still come
    (wait with `result(request_id)`) or can be read with `kycq status <request_id>`."""

    def __init__(self, request_id: str, timeout: float) -> None:
        self.request_id = request_id
        self.timeout = timeout
        super().__init__(
            f"no result for {request_id} within {timeout:g} s: the request was published; wait "
            f"with result({request_id!r}) or look it up with `kycq status {request_id}`"
        )
