"""`DynsecProvisioner`: keeps Mosquitto's dynamic-security plugin in step with the registry (external mode).

Mosquitto 2.0.11 facts this relies on (checked by tests/integration/broker/test_external.py):

* Default ACL access (`getDefaultACLAccess`): publishClientSend **deny**, subscribe **deny**,
  publishClientReceive allow, unsubscribe allow. So a device needs explicit allows to publish and subscribe;
  its role also allows receiving its own downlinks explicitly, so nothing breaks if an operator turns the
  receive default to deny.
* ACL topics cannot use `%u`/`%c` substitution in 2.0.11 dynsec (a shared pattern role matched nothing), so
  every device gets its own role `mf-dev-<id>`:
  publishClientSend `mf/v1/+/<id>/up/#`, subscribePattern `mf/v1/+/<id>/down/#`, publishClientReceive
  `mf/v1/+/<id>/down/#`. The client is created with `clientid` = username, so only that client id may log in.
* `disableClient` disconnects a connected client at once and refuses it afterwards (no separate kick).
* Shared subscriptions (`$share/<group>/…`) work for MQTT 3.1.1 clients; the service account's role allows
  subscribing to `mf/v1/+/+/up/#` with and without the `$share/<group>/` prefix and publishing downlinks.
* Every modifying command makes Mosquitto rewrite its whole JSON file, so commands are sent in batches
  (one control message per `batch_delay_s`, up to `max_batch` commands).

Issuing a credential queues the commands and returns (the batch goes out within ~10 ms; `flush()` waits for
it). Rotating one also disables and re-enables the client, which ends a session still using the old secret.
Revoking waits until Mosquitto has disabled (and so disconnected) the client. `reconcile(registry)` at
start-up repairs drift: every active device present, enabled, with its re-derived secret and role; clients we
created (`textdescription` = `marketfleet-device`) of revoked or disabled devices disabled, of devices no
longer in the registry deleted with their role.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiomqtt

from fleet.models import Device, DeviceStatus

if TYPE_CHECKING:
    from fleet.registry import Registry

__all__ = ["DynsecError", "DynsecProvisioner", "ReconcileReport"]

log = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = "$CONTROL/dynamic-security/v1/response"
DEVICE_MARKER: Final = "marketfleet-device"
SERVICE_MARKER: Final = "marketfleet-service"
# Errors that mean "already as wanted": the commands are sent idempotently.
_BENIGN: Final = frozenset({"Role already exists", "Client already exists"})


class DynsecError(RuntimeError):
    """Mosquitto refused a dynamic-security command; the message names the command and the error."""


@dataclass
class ReconcileReport:
    provisioned: int = 0  # active devices (re)written
    disabled: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def device_role(device_id: str, prefix: str = "mf-dev-") -> str:
    return f"{prefix}{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    return [
        {"acltype": "publishClientSend", "topic": f"mf/v1/+/{device_id}/up/#", "allow": True},
        {"acltype": "subscribePattern", "topic": f"mf/v1/+/{device_id}/down/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": f"mf/v1/+/{device_id}/down/#", "allow": True},
    ]


def service_acls(share_group: str) -> list[dict[str, Any]]:
    return [
        {"acltype": "subscribePattern", "topic": f"$share/{share_group}/mf/v1/+/+/up/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "mf/v1/+/+/up/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "mf/v1/+/+/up/#", "allow": True},
        {"acltype": "publishClientSend", "topic": "mf/v1/+/+/down/#", "allow": True},
    ]


class DynsecProvisioner:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        admin_username: str,
        admin_password: str,
        service_username: str = "",
        service_password: str = "",
        share_group: str = "mf-ingest",
        role_prefix: str = "mf-dev-",
        batch_delay_s: float = 0.01,
        max_batch: int = 200,
        response_timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self.admin_username, self.admin_password = admin_username, admin_password
        self.service_username, self.service_password = service_username, service_password
        self.share_group = share_group
        self.role_prefix = role_prefix
        self.batch_delay_s = batch_delay_s
        self.max_batch = max_batch
        self.response_timeout_s = response_timeout_s
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._queue: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._wakeup = asyncio.Event()
        self._outstanding: set[asyncio.Future[dict[str, Any]]] = set()
        self.commands_sent = 0
        self._known: set[str] = set()  # device clients that exist in Mosquitto (from reconcile, or provisioned)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._client is not None:
            return
        client = aiomqtt.Client(
            self.host, self.port, username=self.admin_username, password=self.admin_password,
            identifier=f"mf-dynsec-{uuid.uuid4().hex[:8]}", clean_session=True, keepalive=30,
        )
        await self._stack.enter_async_context(client)
        self._client = client
        await client.subscribe(RESPONSE_TOPIC, qos=1)
        self._reader = asyncio.create_task(self._read(), name="dynsec-responses")
        self._flusher = asyncio.create_task(self._flush_loop(), name="dynsec-flush")
        if self.service_username:
            await self.ensure_service_account()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        for task in (self._flusher, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._flusher = self._reader = None
        self._client = None
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def __aenter__(self) -> DynsecProvisioner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            try:
                self._responses.put_nowait(json.loads(bytes(message.payload)))
            except (ValueError, TypeError):
                log.warning("unreadable dynsec response: %r", bytes(message.payload)[:200])

    # ---------------------------------------------------------------- commands

    async def execute(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one control message and return Mosquitto's responses, in order."""
        if self._client is None:
            raise DynsecError("provisioner not started")
        if not commands:
            return []
        correlation = uuid.uuid4().hex
        first = dict(commands[0], correlationData=correlation)
        async with self._lock:
            await self._client.publish(CONTROL_TOPIC, json.dumps({"commands": [first, *commands[1:]]}), qos=1)
            self.commands_sent += len(commands)
            while True:
                response = await asyncio.wait_for(self._responses.get(), self.response_timeout_s)
                answers = response.get("responses", [])
                if answers and answers[0].get("correlationData") == correlation:
                    return list(answers)
                log.debug("skipping a dynsec response for another request")

    async def _submit(self, commands: Iterable[dict[str, Any]], *, wait: bool) -> list[dict[str, Any]]:
        futures = []
        loop = asyncio.get_running_loop()
        for command in commands:
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._queue.append((command, future))
            self._outstanding.add(future)
            future.add_done_callback(self._outstanding.discard)
            futures.append(future)
        self._wakeup.set()
        if not wait:
            for future in futures:
                future.add_done_callback(_log_failure)
            return []
        return list(await asyncio.gather(*futures))

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self.batch_delay_s)
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    answers = await self.execute([command for command, _ in batch])
                except Exception as err:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(DynsecError(f"dynsec request failed: {err}"))
                    continue
                for (command, future), answer in zip(batch, answers, strict=False):
                    if future.done():
                        continue
                    error = answer.get("error")
                    if error and error not in _BENIGN:
                        future.set_exception(DynsecError(f"{command['command']} failed: {error}"))
                    else:
                        future.set_result(answer)

    async def flush(self) -> None:
        """Wait until every queued command has been answered."""
        while self._outstanding:
            await asyncio.gather(*list(self._outstanding), return_exceptions=True)

    def _device_commands(self, device_id: str, secret: str) -> list[dict[str, Any]]:
        role = device_role(device_id, self.role_prefix)
        acls = device_acls(device_id)
        return [
            {"command": "createRole", "rolename": role, "acls": acls},
            {"command": "modifyRole", "rolename": role, "acls": acls},
            {"command": "createClient", "username": device_id, "password": secret, "clientid": device_id,
             "textdescription": DEVICE_MARKER, "roles": [{"rolename": role}]},
            {"command": "modifyClient", "username": device_id, "password": secret, "clientid": device_id,
             "textdescription": DEVICE_MARKER, "roles": [{"rolename": role}]},
            {"command": "enableClient", "username": device_id},
        ]

    async def provision(self, device_id: str, secret: str, *, wait: bool = True) -> None:
        """Create or repair one device's client and role with this secret."""
        self._known.add(device_id)
        await self._submit(self._device_commands(device_id, secret), wait=wait)

    async def disable(self, device_id: str) -> None:
        """Disable the client: Mosquitto disconnects it now and refuses it until enabled again."""
        answers = await self._submit([{"command": "disableClient", "username": device_id}], wait=True)
        log.info("dynsec: disabled %s (%s)", device_id, answers[0].get("error", "ok") if answers else "?")

    async def delete(self, device_id: str) -> None:
        self._known.discard(device_id)
        await self._submit([
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id, self.role_prefix)},
        ], wait=False)

    async def ensure_service_account(self) -> None:
        """The platform's own account (ingest workers, downlinks) with its role."""
        role = "mf-platform"
        acls = service_acls(self.share_group)
        await self._submit([
            {"command": "createRole", "rolename": role, "acls": acls},
            {"command": "modifyRole", "rolename": role, "acls": acls},
            {"command": "createClient", "username": self.service_username, "password": self.service_password,
             "textdescription": SERVICE_MARKER, "roles": [{"rolename": role}]},
            {"command": "modifyClient", "username": self.service_username, "password": self.service_password,
             "textdescription": SERVICE_MARKER, "roles": [{"rolename": role}]},
            {"command": "enableClient", "username": self.service_username},
        ], wait=True)

    async def default_acl_access(self) -> dict[str, bool]:
        answers = await self.execute([{"command": "getDefaultACLAccess"}])
        return {a["acltype"]: bool(a["allow"]) for a in answers[0].get("data", {}).get("acls", [])}

    async def list_clients(self) -> list[dict[str, Any]]:
        answers = await self.execute([{"command": "listClients", "verbose": True, "count": -1}])
        if answers and "error" in answers[0]:
            raise DynsecError(f"listClients failed: {answers[0]['error']}")
        return list(answers[0].get("data", {}).get("clients", []))

    # ---------------------------------------------------------------- fleet.registry.CredentialListener

    async def credential_issued(self, device: Device, secret: str) -> None:
        commands = self._device_commands(device.id, secret)
        if device.id in self._known:
            # A rotation: Mosquitto keeps a live session when only the password changes; disabling and
            # enabling again ends it, so the old secret stops working at once, as in embedded mode.
            commands += [{"command": "disableClient", "username": device.id},
                         {"command": "enableClient", "username": device.id}]
        self._known.add(device.id)
        await self._submit(commands, wait=False)

    async def credential_revoked(self, device: Device) -> None:
        await self.disable(device.id)

    async def device_changed(self, device: Device) -> None:
        if str(getattr(device.status, "value", device.status)) != DeviceStatus.ACTIVE.value:
            await self.disable(device.id)

    # ---------------------------------------------------------------- drift repair

    async def reconcile(self, registry: Registry) -> ReconcileReport:
        """Make Mosquitto's clients match the registry (see the module docstring)."""
        report = ReconcileReport()
        access = await self.default_acl_access()
        if access.get("publishClientReceive") is False:
            log.info("dynsec default publishClientReceive is deny; device roles allow their own downlinks")
        existing = {c["username"]: c for c in await self.list_clients()}
        self._known |= {u for u, c in existing.items() if c.get("textdescription") == DEVICE_MARKER}
        rows = await Device.all().values("id", "status")
        known = {row["id"]: str(getattr(row["status"], "value", row["status"])) for row in rows}
        commands: list[dict[str, Any]] = []
        for device_id, status in known.items():
            secret = await registry.device_secret(device_id) if status == DeviceStatus.ACTIVE.value else None
            if secret is not None:
                commands += self._device_commands(device_id, secret)
                report.provisioned += 1
            elif device_id in existing and not existing[device_id].get("disabled"):
                commands.append({"command": "disableClient", "username": device_id})
                report.disabled.append(device_id)
        for username, client in existing.items():
            if client.get("textdescription") == DEVICE_MARKER and username not in known:
                commands.append({"command": "deleteClient", "username": username})
                commands.append({"command": "deleteRole", "rolename": device_role(username, self.role_prefix)})
                report.deleted.append(username)
        if self.service_username:
            await self.ensure_service_account()
        for start in range(0, len(commands), self.max_batch):
            chunk = commands[start : start + self.max_batch]
            for command, answer in zip(chunk, await self.execute(chunk), strict=False):
                error = answer.get("error")
                if error and error not in _BENIGN:
                    report.errors.append(f"{command['command']} {command.get('username', command.get('rolename'))}: "
                                         f"{error}")
        if report.errors:
            log.warning("dynsec reconcile: %d errors, first: %s", len(report.errors), report.errors[0])
        return report


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("dynsec provisioning failed (repaired by the next reconcile): %s", future.exception())
