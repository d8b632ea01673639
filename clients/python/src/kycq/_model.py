"""The message contract's types: a check request and its result (docs/src/reference/contract.md; spec/schemas)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
import re
from typing import Any, Dict, Literal, Mapping, Optional, Tuple, Union, get_args

from ._errors import KycqError

Check = Literal["mobile3", "id2", "id2_period"]
"""`mobile3` (name + ID number + mobile), `id2` (name + ID number), `id2_period` (+ validity dates)."""

Provider = Literal["tencent", "alibaba", "alimarket"]
"""A provider a request may be pinned to."""

Status = Literal["completed", "rejected", "failed"]
"""`completed`: a provider answered; `rejected`: kycq's validation refused it (nothing called,
nothing billed); `failed`: no answer could be had."""

Verdict = Literal["match", "mismatch", "not_found", "invalid_input", "unsupported"]
"""Only when the status is `completed`."""

Billed = Literal["yes", "no", "unknown"]
"""`unknown`: the call may have been charged and its answer was lost."""

Carrier = Literal["cmcc", "cucc", "ctcc", "cbn"]
"""Mainland carriers, normalised from each provider's spelling."""

ReasonCode = Literal[
    "match",
    "name_mismatch",
    "id_number_mismatch",
    "mobile_owner_mismatch",
    "name_id_number_mismatch",
    "identity_or_validity_mismatch",
    "mismatch_unspecified",
    "no_record",
    "invalid_id_number",
    "invalid_mobile",
    "invalid_name",
    "invalid_date",
    "invalid_request",
    "unsupported_number_range",
    "identity_daily_limit",
    "repeated_invocation_blocked",
    "retries_exhausted",
    "billing_unknown",
    "unknown_provider_code",
    "request_id_conflict",
    "field_too_long",
    "provider_unavailable",
]
"""One table of reasons for every provider (docs/src/reference/reason-codes.md)."""

CHECKS: Tuple[str, ...] = get_args(Check)
STATUSES: Tuple[str, ...] = get_args(Status)
VERDICTS: Tuple[str, ...] = get_args(Verdict)
BILLED: Tuple[str, ...] = get_args(Billed)
CARRIERS: Tuple[str, ...] = get_args(Carrier)
REASON_CODES: Tuple[str, ...] = get_args(ReasonCode)


@dataclass(frozen=True)
class Request:
    """One check request, as published to the request exchange.

    `request_id` is the idempotency key (1–64 characters of ``[A-Za-z0-9_-]``): leave it out
    and the client generates one (a uuid4 in hex); give your own to make retries idempotent —
    kycq answers a repeated `request_id` from its stored result and never bills it twice.
    """

    check: Check
    name: str = dataclasses.field(repr=False)
    id_number: str = dataclasses.field(repr=False)
    mobile: Optional[str] = dataclasses.field(default=None, repr=False)
    """Required for `mobile3`. (The name, ID number and mobile are left out of ``repr``, so a
    request in a log line never carries the person.)"""
    validity_start: Optional[str] = None
    """`YYYYMMDD`, required for `id2_period`."""
    validity_end: Optional[str] = None
    """`YYYYMMDD` or `long-term`, required for `id2_period`."""
    provider: Optional[Provider] = None
    """Pin a provider; otherwise the worker's configured route."""
    merchant_user_id: Optional[str] = None
    scene_code: Optional[str] = None
    request_id: Optional[str] = None

    def to_dict(self) -> Dict[str, str]:
        """The JSON object of the wire format (optional fields that are not set left out)."""
        out: Dict[str, str] = {}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        out["check"] = self.check
        out["name"] = self.name
        out["id_number"] = self.id_number
        for f in ("mobile", "validity_start", "validity_end", "provider", "merchant_user_id", "scene_code"):
            v = getattr(self, f)
            if v is not None:
                out[f] = v
        return out

    def to_json(self) -> str:
        """The request as the worker reads it (UTF-8 JSON, non-ASCII characters kept)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def prepared(self) -> "Request":
        """What the client publishes: the id and the check trimmed, blank optional fields
        dropped, a request_id generated (uuid4 hex) unless given — as the Rust client does."""
        rid = (self.request_id or "").strip() or uuid.uuid4().hex
        check = self.check.strip()
        if not check:
            raise KycqError("no check named: set check to mobile3, id2 or id2_period")
        blanks: Dict[str, Any] = {}
        for f in ("mobile", "validity_start", "validity_end", "provider", "merchant_user_id", "scene_code"):
            v = getattr(self, f)
            if v is not None and not v.strip():
                blanks[f] = None
        return dataclasses.replace(self, request_id=rid, check=check, **blanks)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Subject:
    """The subject as kycq publishes and stores it: masked only (`张*`, `110***********002X`,
    `138****5678`). A field the request did not have is None."""

    name: Optional[str]
    id_number: Optional[str]
    mobile: Optional[str]


@dataclass(frozen=True)
class CheckResult:
    """The one result every request ends with (docs/src/reference/contract.md, "Result"). Every field is always
    present on the wire; a field that does not apply is None."""

    request_id: str
    check: Optional[Check]
    """None only when the request named no check kycq knows."""
    status: Status
    verdict: Optional[Verdict]
    """Only when completed."""
    reason_code: ReasonCode
    reason: str
    """A sentence for people."""
    billed: Billed
    carrier: Optional[Carrier]
    provider: Optional[str]
    """The provider that produced the answer (None when none was called)."""
    provider_code: Optional[str]
    """The provider's most specific code (`HTTP<status>` for a bare HTTP error)."""
    provider_request_id: Optional[str]
    """The provider's request id, for support tickets."""
    attempts: int
    """Provider calls made for this request."""
    subject: Subject
    received_at: datetime
    """When kycq first received the request (UTC)."""
    completed_at: datetime
    """When the result was decided (UTC)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CheckResult":
        """Read a result object. Fields this version does not know are ignored (forward
        compatible); a missing field or a value outside the contract is a `KycqError`."""
        if not isinstance(d, Mapping):
            raise KycqError(f"a result is a JSON object, not {type(d).__name__}")
        s = d.get("subject")
        if "subject" not in d or not isinstance(s, Mapping):
            raise KycqError("result field `subject` is missing or not an object")
        subject = Subject(
            name=_opt_str(s, "name", "subject."),
            id_number=_opt_str(s, "id_number", "subject."),
            mobile=_opt_str(s, "mobile", "subject."),
        )
        attempts = _field(d, "attempts")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise KycqError(f"result field `attempts` is not a count: {attempts!r}")
        return cls(
            request_id=_str(d, "request_id"),
            check=_opt_enum(d, "check", CHECKS),  # type: ignore[arg-type]
            status=_enum(d, "status", STATUSES),  # type: ignore[arg-type]
            verdict=_opt_enum(d, "verdict", VERDICTS),  # type: ignore[arg-type]
            reason_code=_enum(d, "reason_code", REASON_CODES),  # type: ignore[arg-type]
            reason=_str(d, "reason"),
            billed=_enum(d, "billed", BILLED),  # type: ignore[arg-type]
            carrier=_opt_enum(d, "carrier", CARRIERS),  # type: ignore[arg-type]
            provider=_opt_str(d, "provider"),
            provider_code=_opt_str(d, "provider_code"),
            provider_request_id=_opt_str(d, "provider_request_id"),
            attempts=attempts,
            subject=subject,
            received_at=_time(d, "received_at"),
            completed_at=_time(d, "completed_at"),
        )

    @classmethod
    def from_json(cls, data: Union[str, bytes]) -> "CheckResult":
        """Read a result from its JSON text (a reply's body)."""
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise KycqError(f"a result is not JSON: {e}") from None
        return cls.from_dict(obj)

    def to_dict(self) -> Dict[str, Any]:
        """The result in its wire form (times as RFC 3339 UTC with milliseconds)."""
        d = dataclasses.asdict(self)
        d["received_at"] = _fmt_time(self.received_at)
        d["completed_at"] = _fmt_time(self.completed_at)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _field(d: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in d:
        raise KycqError(f"result field `{where}{key}` is missing")
    return d[key]


def _str(d: Mapping[str, Any], key: str, where: str = "") -> str:
    v = _field(d, key, where)
    if not isinstance(v, str):
        raise KycqError(f"result field `{where}{key}` is not a string: {v!r}")
    return v


def _opt_str(d: Mapping[str, Any], key: str, where: str = "") -> Optional[str]:
    v = _field(d, key, where)
    if v is not None and not isinstance(v, str):
        raise KycqError(f"result field `{where}{key}` is not a string or null: {v!r}")
    return v


def _enum(d: Mapping[str, Any], key: str, allowed: Tuple[str, ...]) -> str:
    v = _str(d, key)
    if v not in allowed:
        raise KycqError(f"result field `{key}` has an unknown value {v!r} (one of {', '.join(allowed)})")
    return v


def _opt_enum(d: Mapping[str, Any], key: str, allowed: Tuple[str, ...]) -> Optional[str]:
    if _field(d, key) is None:
        return None
    return _enum(d, key, allowed)


def _time(d: Mapping[str, Any], key: str) -> datetime:
    v = _str(d, key)
    text = v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v
    # Python < 3.11 reads only 3 or 6 fractional digits: make them 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise KycqError(f"result field `{key}` is not an RFC 3339 time: {v!r}") from None
    if t.tzinfo is None:
        raise KycqError(f"result field `{key}` has no UTC offset: {v!r}")
    return t.astimezone(timezone.utc)


_FRACTION = re.compile(r"\.(\d+)(?=[+-]\d\d:\d\d$)")


def _fmt_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
