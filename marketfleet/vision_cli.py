"""`marketfleet vision …`: the vision worker process, camera discovery and onboarding, model training.

Wiring only: settings, the registry (device secrets, registration) and the vision package's own services.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

vision_app = typer.Typer(no_args_is_help=True, help="Cameras: ONVIF onboarding, the vision worker, training.")


@vision_app.command("run")
def vision_run() -> None:
    """Run the vision worker: every enabled camera's stream → detector → analytics → events over MQTT."""
    from marketfleet.cli import console, run, settings

    s = settings()

    async def main() -> None:
        from fleet.registry import Registry
        from marketfleet import db
        from marketfleet.platform import master_key
        from vision.service import VisionService

        await db.connect(s.registry_url)
        registry = Registry(master_key=master_key(s))
        service = VisionService(s.vision, data_dir=s.data_dir, mqtt_host=s.broker.host, mqtt_port=s.broker.port,
                                secret_for=registry.device_secret, keepalive_s=s.broker.keepalive_s)
        await service.start()
        console.print(f"vision worker: {len(service.running)} camera(s) running, model {s.vision.model_path}")
        for device_id, problem in service.problems.items():
            console.print(f"[yellow]camera {device_id} not started:[/] {problem}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await service.aclose()

    from vision.detector import DetectorError

    try:
        run(main)
    except DetectorError as err:
        from marketfleet.cli import fail

        fail(str(err))


@vision_app.command("discover")
def vision_discover(
    timeout: Annotated[float, typer.Option(help="seconds to wait for answers")] = 3.0,
    target: Annotated[list[str] | None, typer.Option(help="host:port to probe directly instead of multicast")] = None,
) -> None:
    """Find ONVIF cameras on the LAN with WS-Discovery and print them as JSON lines."""
    from marketfleet.cli import console, fail
    from vision.onboarding import discover

    targets = None
    if target:
        try:
            targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in target]
        except (IndexError, ValueError):
            fail("--target must be host:port")
    found = asyncio.run(discover(timeout, targets))
    for camera in found:
        console.print_json(json.dumps({"endpoint": camera.endpoint, "xaddrs": list(camera.xaddrs),
                                       "name": camera.name, "scopes": list(camera.scopes)}))
    if not found:
        console.print("no ONVIF camera answered")


@vision_app.command("onboard")
def vision_onboard(
    host: Annotated[str, typer.Argument(help="camera address")],
    port: Annotated[int, typer.Option()] = 80,
    username: Annotated[str, typer.Option()] = "admin",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)] = "",
    vendor: Annotated[str | None, typer.Option(help="vendor code (default: setting vision.vendor)")] = None,
    market: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str, typer.Option()] = "",
    analytics: Annotated[Path | None, typer.Option(help="JSON file with lines and zones")] = None,
) -> None:
    """Read a camera over ONVIF and register it as a camera device the vision worker watches."""
    from pydantic import ValidationError

    from marketfleet.cli import console, fail, run, settings
    from vision.onboarding import OnboardRequest

    s = settings()
    try:
        config = json.loads(analytics.read_text(encoding="utf-8")) if analytics else {}
        request = OnboardRequest(host=host, port=port, username=username, password=password,
                                 vendor=vendor or s.vision.vendor, market=market, name=name, analytics=config)
    except (OSError, ValueError, ValidationError) as err:
        fail(f"{analytics or 'input'}: {err}")
        return

    async def main():  # type: ignore[no-untyped-def]
        from fleet.registry import Registry
        from marketfleet import db
        from marketfleet.platform import master_key
        from vision.onboarding import onboard, registry_registrar
        from vision.store import VisionStore

        await db.connect(s.registry_url)
        return await onboard(request, registry_registrar(Registry(master_key=master_key(s))), VisionStore())

    camera = run(main)
    console.print(f"camera [bold]{camera.device_id}[/] onboarded: {camera.stream_uri}")


@vision_app.command("train")
def vision_train(
    dataset: Annotated[Path, typer.Argument(help="folder in the YOLO layout with data.yaml (docs/vision.md)")],
    out: Annotated[Path, typer.Option(help="where the trained model goes")] = Path("var/vision-models/market"),
    base: Annotated[str, typer.Option(help="architecture YAML or weights to start from")] = "yolov8n.yaml",
    epochs: Annotated[int, typer.Option(min=1)] = 50,
    imgsz: Annotated[int, typer.Option(min=32)] = 640,
    export: Annotated[str | None, typer.Option(help="also export: onnx or openvino")] = None,
) -> None:
    """Train a market's own model (e.g. white coat / hat / mask for cooked-food counters)."""
    from marketfleet.cli import console, fail
    from vision.training import TrainingError, train_market_model

    try:
        path = train_market_model(dataset, out, base=base, epochs=epochs, imgsz=imgsz, export=export)
    except TrainingError as err:
        fail(str(err))
        return
    console.print(f"model written to {path}; set vision.model_path or vision.ppe_model_path to use it")
