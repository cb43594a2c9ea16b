"""The HTTP client of food-safety detectors (SZ 6.3.5 asks for HTTP / web service), per docs/protocol.md.

* Test results: `POST /api/v1/ingest/{device_id}/results` with a JSON array of `test_result` payloads
  (idempotent by `result_id`; no seq on the wire). A 2xx answer means every result in the array is stored;
  when the answer carries a protocol ack (`seqs`/`rejected`) or rejections naming a `result_id` or an array
  `index`, those are honoured.
* Anything else (the detector's `state`, `fault` events): `POST /api/v1/ingest/{device_id}/{channel}` with a
  message or an array of messages, answered with the acknowledgement.
* Authentication: `Authorization: Bearer <device_id>:<secret>` (`auth="bearer"`), or an HMAC signature
  (`auth="hmac"`): `X-MF-Timestamp` (epoch seconds, from the device clock) and `X-MF-Signature: sha256=<hex of
  HMAC-SHA256(secret, "<timestamp>." + body)>`; `auth="both"` sends both.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx

from simulators.topics import http_ingest_path, http_results_path
from simulators.transports.base import RequestTransport, log
from simulators.wire import Ack, encode, encode_messages

HttpAuth = Literal["bearer", "hmac", "both"]


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 over `"<timestamp>." + body` keyed with the device secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class HttpTransport(RequestTransport):
    name = "http"
    max_batch_messages = 100

    def __init__(
        self,
        base_url: str,
        *,
        auth: HttpAuth = "bearer",
        results_endpoint: bool = True,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
        verify: bool = True,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        super().__init__(encoding="json", reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.base_url = base_url.rstrip("/")
        self.auth: HttpAuth = auth
        self.results_endpoint = results_endpoint
        self.timeout_s = timeout_s
        self.statuses: dict[int, int] = {}  # HTTP status → count, for diagnostics
        self._client = client
        self._owns_client = client is None
        self._verify = verify

    async def start(self, link: Any) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, verify=self._verify)
        await super().start(link)

    async def close(self) -> None:
        await super().close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def headers(self, body: bytes) -> dict[str, str]:
        identity = self.identity
        headers = {"Content-Type": "application/json"}
        if self.auth in ("bearer", "both"):
            headers["Authorization"] = f"Bearer {identity.device_id}:{identity.secret}"
        if self.auth in ("hmac", "both"):
            timestamp = int(self.link.now().timestamp()) if self.link is not None else 0
            headers["X-MF-Timestamp"] = str(timestamp)
            headers["X-MF-Signature"] = sign(identity.secret, timestamp, body)
        return headers

    async def _post(self, path: str, body: bytes) -> httpx.Response:
        self._ensure_up()
        assert self._client is not None
        try:
            response = await self._client.post(self.base_url + path, content=body, headers=self.headers(body))
        except httpx.HTTPError as exc:
            raise self._failed(f"http: {type(exc).__name__}: {exc}") from exc
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code in (401, 403, 404, 408, 429) or response.status_code >= 500:
            # Keep the messages and retry later: credentials may be rotated, the service may come back.
            raise self._failed(f"http {response.status_code}: {response.text[:200]}")
        self.reset_backoff()
        return response

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        assert self.link is not None
        payloads = [m["payload"] for m in messages]
        if self.results_endpoint and channel == "event" and all(p.get("type") == "test_result" for p in payloads):
            response = await self._post(http_results_path(self.identity.device_id), encode(payloads))
            self.link.on_ack(self._results_ack(messages, response))
            return
        response = await self._post(
            http_ingest_path(self.identity.device_id, channel), encode_messages(messages, self.encoding)
        )
        body = self._body(response)
        if isinstance(body, Mapping) and ("seqs" in body or "rejected" in body):
            self.link.on_ack(Ack.parse(body))
        elif response.is_success:
            self.link.on_ack(Ack(seqs=tuple(int(m["seq"]) for m in messages)))
        else:
            self.link.on_ack(self._all_rejected(messages, response))

    def _results_ack(self, messages: Sequence[Mapping[str, Any]], response: httpx.Response) -> Ack:
        """Map the answer of the results endpoint back to the device's seqs. The platform keys results by
        `result_id` (its `seqs` are derived from result ids, not ours), and lists each one's outcome in
        `results`: `stored`, `rejected` (drop it) or `retry` (keep it)."""
        body = self._body(response)
        if not response.is_success and response.status_code != 503:
            return self._all_rejected(messages, response)
        by_result = {m["payload"].get("result_id"): int(m["seq"]) for m in messages}
        stored: list[int] = []
        rejected: list[dict[str, Any]] = []
        rows = body.get("results", []) if isinstance(body, Mapping) else []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                continue
            seq = by_result.get(row.get("result_id"))
            if seq is None and index < len(messages):
                seq = int(messages[index]["seq"])
            if seq is None:
                continue
            if row.get("status") == "stored":
                stored.append(seq)
            elif row.get("status") == "rejected":
                rejected.append({"seq": seq, "reason": row.get("reason", "schema"), "detail": row.get("detail", "")})
        if not rows and response.is_success:  # an answer without per-result outcomes: 2xx stored them all
            stored = list(by_result.values())
        return Ack.parse({"seqs": stored, "rejected": rejected})

    def _all_rejected(self, messages: Sequence[Mapping[str, Any]], response: httpx.Response) -> Ack:
        """A 4xx for the whole request: nothing in it can ever be stored; the outbox drops it."""
        reason = {413: "oversized", 422: "schema"}.get(response.status_code, "malformed")
        detail = response.text[:200]
        log.warning("%s: http %s for %d messages: %s", self.identity.device_id, response.status_code,
                    len(messages), detail)  # fmt: skip
        return Ack.parse({"rejected": [{"seq": m["seq"], "reason": reason, "detail": detail} for m in messages]})

    async def send_raw(self, channel: str, data: bytes) -> None:
        path = http_results_path(self.identity.device_id) if channel == "results" else None
        await self._post(path or http_ingest_path(self.identity.device_id, channel), data)

