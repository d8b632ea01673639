"""kycq: send identity-verification (KYC) checks to kycq workers over RabbitMQ and get their
results back.

```python
from kycq import Client, Request

with Client.connect("amqp://guest:guest@127.0.0.1:5672/%2f") as client:
    result = client.verify(Request(check="id2", name="张三", id_number="110105197001010011"))
    print(result.status, result.verdict, result.reason_code, result.billed)
```
"""

from ._async import AsyncClient
from ._common import LATE_RESULTS
from ._errors import KycqError, KycqTimeout
from ._model import (
    Billed,
    Carrier,
    Check,
    CheckResult,
    Provider,
    ReasonCode,
    Request,
    Status,
    Subject,
    Verdict,
)
from ._sync import Client

__all__ = [
    "AsyncClient",
    "Billed",
    "Carrier",
    "Check",
    "CheckResult",
    "Client",
    "KycqError",
    "KycqTimeout",
    "LATE_RESULTS",
    "Provider",
    "ReasonCode",
    "Request",
    "Status",
    "Subject",
    "Verdict",
]

__version__ = "0.1.0"
