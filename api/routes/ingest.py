"""HTTP ingest for devices (SZ 6.3.5 asks food-safety detectors for HTTP / a web service).

    POST /api/v1/ingest/{device_id}/results     JSON array of food-detector test results, idempotent by result_id
    POST /api/v1/ingest/{device_id}/{channel}   a message or an array of messages (docs/protocol.md), JSON or CBOR

These routes authenticate *devices*, not people: `Authorization: Bearer <device_id>:<secret>`, or an HMAC
signature `X-MF-Signature: sha256=<hex HMAC-SHA256(secret, "<X-MF-Timestamp>." + body)>` with `X-MF-Timestamp`
(epoch seconds) within ±300 s of the platform clock. The answer is the acknowledgement of docs/protocol.md
(`seqs`, `high`, `rejected`), 200 when every message is stored or permanently rejected, 503 (same body,
`Retry-After`) when some could not be stored now and must be sent again; 401 bad credentials, 413 too large,
422 a body that is not a message or an array at all.

Idempotency of `results` without a table: a result's `seq` is derived from its `result_id`
(`2**62 + first 62 bits of SHA-256("marketfleet/result-id\\0" + result_id)`, so it never meets a device's own
counter) and its message time from `tested_at` (to the second, plus 0–999 ms also taken from the hash). The same
result sent again is therefore the same (device, seq, time): the pipeline acknowledges it again and the store
rewrites the identical point, on any worker and after any restart. Each result's outcome is listed in
`results` next to the usual ack fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from api.auth import ContextDep
from broker.codec import MAX_MESSAGES, MessageError, UplinkError, decode_uplink, parse_ts
from broker.topics import INGEST_CHANNELS
from broker.uplink import Ack, Rejection, RejectReason, Uplink
from fleet.errors import Unauthorised
from fleet.models import Device, DeviceStatus
from fleet.registry import Registry

__all__ = ["RESULT_SEQ_BASE", "result_seq", "router", "sign"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

SIGNATURE_WINDOW_S: Final = 300
DEFAULT_UPLINK_BYTES: Final = 64 * 1024
RESULT_SEQ_BASE: Final = 1 << 62
_RESULT_LABEL: Final = b"marketfleet/result-id\x00"
_DEAD_LETTER_BYTES: Final = 1024
_MAX_RESULT_ID: Final = 64

_ACK_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "seqs": {"type": "array", "items": {"type": "integer"}},
        "high": {"type": "integer"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "seq": {"type": ["integer", "null"]},
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}
_RESULTS_ANSWER: Final = {
    **_ACK_SCHEMA,
    "properties": {
        **_ACK_SCHEMA["properties"],
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "result_id": {"type": ["string", "null"]},
                    "seq": {"type": ["integer", "null"]},
                    "status": {"type": "string", "enum": ["stored", "rejected", "retry"]},
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}
_AUTH_DOC: Final = (
    "Device authentication: `Authorization: Bearer <device_id>:<secret>`, or `X-MF-Timestamp` + "
    "`X-MF-Signature: sha256=<hex HMAC-SHA256(secret, \"<timestamp>.\" + body)>` (±300 s)."
)


def _responses(answer: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": "every message stored or permanently rejected",
              "content": {"application/json": {"schema": answer}}},
        401: {"description": "missing or bad device credentials"},
        413: {"description": "body larger than the uplink limit (64 KiB) or more than 500 messages"},
        422: {"description": "the body is not a message or an array of them"},
        429: {"description": "too many uploads from this device; wait `Retry-After` seconds"},
        503: {"description": "some messages could not be stored now; send them again (body: the ack)",
              "content": {"application/json": {"schema": answer}}},
    }


# ---------------------------------------------------------------- shared helpers


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-MF-Signature` header value for a body (devices, simulators and tests use this)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def result_seq(result_id: str) -> int:
    """The seq a result is stored under: derived from its id, in [2**62, 2**63)."""
    digest = hashlib.sha256(_RESULT_LABEL + result_id.encode()).digest()
    return RESULT_SEQ_BASE | (int.from_bytes(digest[:8], "big") & (RESULT_SEQ_BASE - 1))


def _result_time(result_id: str, tested_at: datetime) -> datetime:
    digest = hashlib.sha256(_RESULT_LABEL + result_id.encode()).digest()
    return tested_at.replace(microsecond=0) + timedelta(milliseconds=int.from_bytes(digest[8:10], "big") % 1000)


async def _authenticate(
    request: Request, registry: Registry, device_id: str, body: bytes
) -> None:
    signature = request.headers.get("x-mf-signature")
    authorization = request.headers.get("authorization", "")
    if signature is not None:
        stamp = request.headers.get("x-mf-timestamp", "")
        if not stamp.isdigit():
            raise Unauthorised("X-MF-Timestamp: send the signing time as integer epoch seconds")
        if abs(time.time() - int(stamp)) > SIGNATURE_WINDOW_S:
            raise Unauthorised(f"X-MF-Timestamp: more than {SIGNATURE_WINDOW_S} s from the platform clock; "
                               "sync the device clock and sign again")
        secret = await registry.device_secret(device_id)
        if secret is None or not hmac.compare_digest(sign(secret, stamp, body), signature.strip()):
            raise Unauthorised("X-MF-Signature does not match (unknown device, revoked credential, or the "
                               "signature is not sha256=<hex> over '<timestamp>.' + body)")
        status = await Device.filter(id=device_id).values_list("status", flat=True)
        if not status or str(getattr(status[0], "value", status[0])) != DeviceStatus.ACTIVE.value:
            raise Unauthorised(f"device {device_id!r} may not send (disabled or retired)")
        return
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorised("send 'Authorization: Bearer <device_id>:<secret>' or an X-MF-Signature")
    token_device, sep, secret = token.strip().rpartition(":")  # ids may contain ':', secrets never do
    if not sep or token_device != device_id:
        raise Unauthorised("the bearer token must be '<device_id>:<secret>' for the device in the path")
    if await registry.check_device_secret(device_id, secret) is None:
        raise Unauthorised("unknown device, wrong or revoked secret, or the device is disabled")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes; at most {limit} per uplink")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body larger than {limit} bytes per uplink")
    return bytes(body)


async def _accept(request: Request, ctx: Any, device_id: str) -> tuple[Any, bytes]:
    """(pipeline, body) for an authenticated device: 413 too large, 401 bad credentials, then 503 when this
    server runs no ingest (an API-only process) — credentials are checked first so a role walk sees 401."""
    pipeline = ctx.services.get("pipeline")
    limit = pipeline.max_payload_bytes if pipeline is not None else DEFAULT_UPLINK_BYTES
    body = await _read_body(request, limit)
    await _authenticate(request, ctx.registry, device_id, body)
    limiter = ctx.services.get("ingest_limiter")
    if limiter is not None and (wait := limiter.take(device_id)) > 0:
        after = limiter.retry_after_s(wait)
        raise HTTPException(429, f"more than {limiter.rate:g} uploads/s from {device_id}; retry in {after} s",
                            headers={"Retry-After": str(after)})
    broker = ctx.services.get("broker")
    if broker is not None:  # a sign of life for presence (online, last seen), as an MQTT uplink is
        broker.presence.seen(device_id, reason="uplink")
    if pipeline is None:
        raise HTTPException(503, "ingest is not running on this server", headers={"Retry-After": "30"})
    return pipeline, body


def _dead_letter(pipeline: Any, device_id: str, path: str, reason: RejectReason, detail: str, payload: bytes) -> None:
    """Queue a dead letter through the pipeline (counted in its metrics, inserted in bulk with its next batch;
    `_flush` writes them at once when no batch follows)."""
    pipeline.dead_letter(Uplink(transport="http", device_id=device_id, channel="event", body=payload, topic=path),
                         reason, detail)


async def _flush(pipeline: Any) -> None:
    try:
        await pipeline.flush_dead_letters()
    except Exception:
        log.exception("could not write HTTP ingest dead letters")


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _merge(device_id: str, acks: list[Ack], extra: list[Rejection]) -> Ack:
    merged = Ack(device_id, high=max((a.high for a in acks), default=-1))
    for ack in acks:
        merged.seqs.extend(ack.seqs)
        merged.rejected.extend(ack.rejected)
    merged.rejected.extend(extra)
    return merged


# ---------------------------------------------------------------- food-detector results


@router.post(
    "/{device_id}/results",
    summary="Upload food-safety test results (idempotent by result_id)",
    description=(
        "A JSON array (or one object) of `food_detector` test results as in `GET /api/v1/kinds/food_detector` "
        "(event `test_result`; `type` may be left out). `tested_at` needs a zone (RFC 3339) or epoch "
        "milliseconds. Sending a result again is harmless: it is stored once. " + _AUTH_DOC
    ),
    responses=_responses(_RESULTS_ANSWER),
    openapi_extra={"x-auth": "device", "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "maxItems": MAX_MESSAGES, "items": {"type": "object"}}}}}},
)
async def upload_results(
    request: Request,
    ctx: ContextDep,
    device_id: Annotated[str, Path(min_length=1, max_length=64)],
    authorization: Annotated[str | None, Header(description="Bearer <device_id>:<secret>")] = None,
    x_mf_timestamp: Annotated[str | None, Header(description="epoch seconds, with X-MF-Signature")] = None,
    x_mf_signature: Annotated[str | None, Header(description="sha256=<hex HMAC>")] = None,
) -> JSONResponse:
    del authorization, x_mf_timestamp, x_mf_signature  # declared for the OpenAPI docs; read from the request
    pipeline, body = await _accept(request, ctx, device_id)
    limit = pipeline.max_payload_bytes
    where = f"/api/v1/ingest/{device_id}/results"
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        _dead_letter(pipeline, device_id, where, "malformed", f"body is not JSON: {err}", body)
        await _flush(pipeline)
        raise HTTPException(422, f"body is not JSON: {err}") from None
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        _dead_letter(pipeline, device_id, where, "malformed", "body must be a non-empty array of results", body)
        await _flush(pipeline)
        raise HTTPException(422, "body must be a JSON array of test results (or one result object)")
    if len(items) > MAX_MESSAGES:
        raise HTTPException(413, f"{len(items)} results; at most {MAX_MESSAGES} per request")

    outcomes: list[dict[str, Any]] = []
    pre_rejected: list[Rejection] = []
    messages: list[bytes] = []
    for index, item in enumerate(items):
        problem: tuple[str, str] | None = None
        result_id = item.get("result_id") if isinstance(item, dict) else None
        seq = result_seq(result_id) if isinstance(result_id, str) and 0 < len(result_id) <= _MAX_RESULT_ID else None
        tested_at: datetime | None = None
        if not isinstance(item, dict):
            problem = ("malformed", f"[{index}]: a result must be an object")
        elif seq is None:
            problem = ("schema", f"[{index}].result_id: a string of 1–{_MAX_RESULT_ID} characters is required")
        else:
            try:
                tested_at = parse_ts(item.get("tested_at"))
            except ValueError as err:
                problem = ("schema", f"[{index}].tested_at: {err}")
        if problem is not None or tested_at is None or seq is None:
            reason, detail = problem or ("schema", f"[{index}]: invalid")
            pre_rejected.append(Rejection(seq, reason, detail))  # type: ignore[arg-type]
            outcomes.append({"result_id": result_id if isinstance(result_id, str) else None, "seq": seq,
                             "status": "rejected", "reason": reason, "detail": detail})
            _dead_letter(pipeline, device_id, where, reason, detail, _encode(item))  # type: ignore[arg-type]
            continue
        payload = {"type": "test_result", **item}
        ts = _result_time(str(result_id), tested_at)
        messages.append(_encode({"seq": seq, "ts": ts.isoformat().replace("+00:00", "Z"), "payload": payload}))
        outcomes.append({"result_id": result_id, "seq": seq, "status": "retry"})

    if pre_rejected and not messages:
        await _flush(pipeline)  # no batch follows to carry the dead letters
    acks = list(await asyncio.gather(*(pipeline.submit(Uplink(
        transport="http", device_id=device_id, channel="event", body=chunk, content_format="json", topic=where,
    )) for chunk in _chunks(messages, limit))))
    ack = _merge(device_id, acks, pre_rejected)
    stored = set(ack.seqs)
    reasons = {r.seq: r for r in ack.rejected if r.seq is not None}
    for outcome in outcomes:
        if outcome["status"] != "retry":
            continue
        if outcome["seq"] in stored:
            outcome["status"] = "stored"
        elif outcome["seq"] in reasons:
            rejection = reasons[outcome["seq"]]
            outcome.update(status="rejected", reason=rejection.reason, detail=rejection.detail)
    answer = {**ack.to_json(), "results": outcomes}
    if any(o["status"] == "retry" for o in outcomes):
        return JSONResponse(answer, status_code=503, headers={"Retry-After": "30"})
    return JSONResponse(answer)


def _chunks(messages: list[bytes], limit: int) -> list[bytes]:
    """JSON arrays of the messages, each within the uplink limit (a result is far smaller than it)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for message in messages:
        if current and size + len(message) + 1 > limit:
            chunks.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(message)
        size += len(message) + 1
    if current:
        chunks.append(b"[" + b",".join(current) + b"]")
    return chunks


# ---------------------------------------------------------------- any channel


@router.post(
    "/{device_id}/{channel}",
    summary="Send messages on a channel (telemetry, event or state)",
    description=(
        "The body is one message `{seq, ts, payload}` or an array of them (docs/protocol.md), JSON "
        "(`application/json`) or CBOR (`application/cbor`). " + _AUTH_DOC
    ),
    responses=_responses(_ACK_SCHEMA),
    openapi_extra={"x-auth": "device", "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
        "application/cbor": {"schema": {}},
    }}},
)
async def upload_messages(
    request: Request,
    ctx: ContextDep,
    device_id: Annotated[str, Path(min_length=1, max_length=64)],
    channel: Annotated[str, Path(description="telemetry, event or state")],
    authorization: Annotated[str | None, Header(description="Bearer <device_id>:<secret>")] = None,
    x_mf_timestamp: Annotated[str | None, Header(description="epoch seconds, with X-MF-Signature")] = None,
    x_mf_signature: Annotated[str | None, Header(description="sha256=<hex HMAC>")] = None,
) -> JSONResponse:
    del authorization, x_mf_timestamp, x_mf_signature
    pipeline, body = await _accept(request, ctx, device_id)
    if channel not in INGEST_CHANNELS:
        raise HTTPException(404, f"no channel {channel!r}: send to telemetry, event or state")
    where = f"/api/v1/ingest/{device_id}/{channel}"
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = "cbor" if content_type == "application/cbor" else "json" if content_type == "application/json" else "auto"
    try:
        decoded = decode_uplink(body, fmt)
    except UplinkError as err:
        _dead_letter(pipeline, device_id, where, err.reason, err.detail, body)
        await _flush(pipeline)
        raise HTTPException(413 if err.reason == "oversized" else 422, err.detail) from None
    ack = await pipeline.submit(Uplink(transport="http", device_id=device_id, channel=channel, body=body,
                                       content_format=fmt, topic=where))
    expected = {m.seq for m in decoded if not isinstance(m, MessageError) or m.seq is not None}
    accounted = set(ack.seqs) | {r.seq for r in ack.rejected}
    if None in accounted and not ack.seqs:  # the whole uplink was refused (e.g. unknown device)
        accounted |= expected
    if expected - accounted:
        return JSONResponse(ack.to_json(), status_code=503, headers={"Retry-After": "30"})
    return JSONResponse(ack.to_json())
