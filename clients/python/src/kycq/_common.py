"""What the sync and the async client share: options, names, the late-results store."""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

from ._errors import KycqError
from ._model import CheckResult, Request

log = logging.getLogger("kycq")

LATE_RESULTS = 10_000
"""Results kept for `result()` after their `verify` gave up, or that nobody waited for yet
(the oldest go first) — the Rust client's `LATE_RESULTS`."""

DEFAULT_REQUEST_EXCHANGE = "kyc.requests"
DEFAULT_REPLY_QUEUE_EXPIRES = 3600.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONFIRM_TIMEOUT = 30.0


class Options:
    """The options of `connect`, resolved into names and numbers."""

    def __init__(
        self,
        prefix: str,
        request_exchange: str,
        reply_queue: Optional[str],
        reply_queue_expires: float,
        timeout: float,
        confirm_timeout: float,
    ) -> None:
        if reply_queue_expires <= 0:
            raise ValueError("reply_queue_expires must be positive (seconds)")
        if timeout < 0 or confirm_timeout <= 0:
            raise ValueError("timeout and confirm_timeout are seconds: timeout >= 0, confirm_timeout > 0")
        self.exchange = prefix + request_exchange
        self.reply_queue = reply_queue or f"{prefix}kycq.client.{uuid.uuid4().hex}"
        self.queue_arguments: Dict[str, Any] = {"x-expires": int(reply_queue_expires * 1000)}
        self.timeout = timeout
        self.confirm_timeout = confirm_timeout


def prepared(request: Request) -> Tuple[Request, str, bytes]:
    """The request to publish, its routing key and its body."""
    if not isinstance(request, Request):
        raise KycqError(f"expected a kycq.Request, got {type(request).__name__}")
    r = request.prepared()
    return r, f"check.{r.check}", json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")


def decode_reply(correlation_id: Optional[str], body: bytes) -> Optional[Tuple[str, CheckResult]]:
    """A reply as the key it answers (its correlation id, else the result's request_id) and the
    result; None (logged) for a reply that is not a result."""
    try:
        r = CheckResult.from_json(body)
    except KycqError as e:
        log.warning("kycq client: a reply that is not a result, dropped: %s", e)
        return None
    return (correlation_id or r.request_id), r


class Late:
    """Results that arrived with nobody waiting for them, bounded (oldest dropped first)."""

    def __init__(self, bound: int = LATE_RESULTS) -> None:
        self.bound = bound
        self.results: "OrderedDict[str, CheckResult]" = OrderedDict()

    def keep(self, key: str, r: CheckResult) -> None:
        self.results[key] = r
        self.results.move_to_end(key)
        while len(self.results) > self.bound:
            self.results.popitem(last=False)

    def take(self, key: str) -> Optional[CheckResult]:
        return self.results.pop(key, None)
