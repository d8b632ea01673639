"""The wire types without a broker: what `CheckResult.from_json` accepts and refuses, what
`Request` puts on the wire, the bound of kept results, and the README's tagged JSON examples."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

import pytest

from kycq import LATE_RESULTS, CheckResult, KycqError, Request, Subject
from kycq._common import Late

README = Path(__file__).resolve().parents[1] / "README.md"

RESULT: Dict[str, Any] = {
    "request_id": "9f0c7a3e2b8d4c1fa6e5d4c3b2a19087",
    "check": "mobile3",
    "status": "completed",
    "verdict": "mismatch",
    "reason_code": "name_mismatch",
    "reason": "mobile number and ID number match, the name does not",
    "billed": "yes",
    "carrier": "cmcc",
    "provider": "tencent",
    "provider_code": "-4",
    "provider_request_id": "884a35af-289f-4b4e-a0b3-2315f02ab31e",
    "attempts": 1,
    "subject": {"name": "张*", "id_number": "110***********002X", "mobile": "138****5678"},
    "received_at": "2026-11-23T02:18:16.120Z",
    "completed_at": "2026-11-23T02:18:16.410Z",
}


def test_a_result_reads_every_field() -> None:
    r = CheckResult.from_json(json.dumps(RESULT))
    assert r.subject == Subject(name="张*", id_number="110***********002X", mobile="138****5678")
    assert r.received_at == datetime(2026, 11, 23, 2, 18, 16, 120000, tzinfo=timezone.utc)
    assert (r.status, r.verdict, r.reason_code, r.billed, r.attempts) == ("completed", "mismatch", "name_mismatch", "yes", 1)
    # And writes them back as they were.
    assert json.loads(r.to_json()) == RESULT


def test_unknown_fields_are_ignored() -> None:
    r = CheckResult.from_dict({**RESULT, "added_in_a_later_version": {"x": 1}})
    assert r == CheckResult.from_dict(RESULT)


@pytest.mark.parametrize("missing", sorted(RESULT))
def test_a_missing_field_is_an_error(missing: str) -> None:
    d = {k: v for k, v in RESULT.items() if k != missing}
    with pytest.raises(KycqError, match=missing):
        CheckResult.from_dict(d)


def test_a_missing_subject_field_is_an_error() -> None:
    with pytest.raises(KycqError, match="subject.mobile"):
        CheckResult.from_dict({**RESULT, "subject": {"name": "张*", "id_number": "110***********002X"}})


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", "done"),
        ("verdict", "maybe"),
        ("billed", True),
        ("reason_code", "no_such_reason"),
        ("carrier", "vodafone"),
        ("check", "id3"),
        ("attempts", "1"),
        ("attempts", -1),
        ("request_id", None),
        ("received_at", "yesterday"),
        ("completed_at", "2026-11-23T02:18:16"),
        ("provider_code", -4),
    ],
)
def test_a_value_outside_the_contract_is_an_error(field: str, value: Any) -> None:
    with pytest.raises(KycqError, match=field):
        CheckResult.from_dict({**RESULT, field: value})


def test_nulls_where_the_contract_allows_them() -> None:
    r = CheckResult.from_dict(
        {**RESULT, "check": None, "verdict": None, "carrier": None, "provider": None, "provider_code": None,
         "provider_request_id": None, "subject": {"name": None, "id_number": None, "mobile": None}}
    )
    assert (r.check, r.verdict, r.carrier, r.provider, r.subject.mobile) == (None, None, None, None, None)


def test_times_with_other_precisions_and_offsets() -> None:
    r = CheckResult.from_dict({**RESULT, "received_at": "2026-11-23T10:18:16.1+08:00",
                               "completed_at": "2026-11-23T02:18:16.123456789Z"})
    assert r.received_at == datetime(2026, 11, 23, 2, 18, 16, 100000, tzinfo=timezone.utc)
    assert r.completed_at == datetime(2026, 11, 23, 2, 18, 16, 123456, tzinfo=timezone.utc)


def test_not_json_is_an_error() -> None:
    with pytest.raises(KycqError, match="not JSON"):
        CheckResult.from_json(b"\xff")
    with pytest.raises(KycqError, match="object"):
        CheckResult.from_json("[]")


def test_a_request_on_the_wire() -> None:
    r = Request(check="mobile3", name="张三", id_number="110105197001010011", mobile="13812345678")
    assert json.loads(r.to_json()) == {
        "check": "mobile3", "name": "张三", "id_number": "110105197001010011", "mobile": "13812345678",
    }
    assert "张三" in r.to_json()  # UTF-8, not \\u escapes
    p = r.prepared()
    assert re.fullmatch(r"[0-9a-f]{32}", p.request_id or "")
    assert p.prepared() == p  # an id once given is kept
    untidy = Request(check=" id2 ", name="n", id_number="i", request_id=" mine-1 ", mobile=" ", scene_code="s")  # type: ignore[arg-type]
    assert untidy.prepared() == Request(check="id2", name="n", id_number="i", request_id="mine-1", scene_code="s")


def test_kept_results_are_bounded_oldest_first() -> None:
    late = Late()
    r = CheckResult.from_dict(RESULT)
    for i in range(LATE_RESULTS + 5):
        late.keep(f"r{i}", r)
    assert len(late.results) == LATE_RESULTS
    assert late.take("r4") is None and late.take("r5") is r
    assert late.take("r5") is None


def tagged_blocks(tag: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```json " + tag + r"\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_examples_are_valid() -> None:
    results = tagged_blocks("kycq-result")
    requests = tagged_blocks("kycq-request")
    assert results and requests
    for block in results:
        CheckResult.from_json(block)
    for block in requests:
        d = json.loads(block)
        assert Request(**d).to_dict() == d


def test_repr_of_a_request_leaves_the_person_out() -> None:
    r = Request(check="mobile3", name="张三丰", id_number="11010519491231002X", mobile="13812345678",
                request_id="r-1")
    text = repr(r)
    for value in ("张三丰", "11010519491231002X", "13812345678"):
        assert value not in text
    assert "r-1" in text and "mobile3" in text
    assert json.loads(r.to_json())["name"] == "张三丰"  # the wire keeps every value
