"""`marketfleet firmware …` (signing keys, signatures, uploads) and `marketfleet ota status` (a campaign's live
progress). Wiring only: the signing functions live in firmware/signing.py, everything else goes through the
HTTP API, as a vendor's or an operator's script would (docs/ota.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

firmware_app = typer.Typer(no_args_is_help=True, help="Firmware images: signing keys, signatures, uploads.")
ota_app = typer.Typer(no_args_is_help=True, help="OTA campaigns.")

KeyOption = Annotated[
    Path | None, typer.Option("--key", help="private key file; default: the platform's ([firmware] signing_key_path)")
]
ApiUrlOption = Annotated[
    str | None, typer.Option("--url", envvar="MF_API_URL", help="the platform's API; default http://{api.host}:{api.port}")
]


def _key_path(key: Path | None) -> Path:
    from marketfleet.cli import settings

    if key is not None:
        return key
    s = settings()
    return Path(s.firmware.signing_key_path or s.data_dir / "firmware-signing.key")


def _api_url(url: str | None) -> str:
    from marketfleet.cli import settings

    if url:
        return url.rstrip("/")
    s = settings()
    return f"http://{s.api.host}:{s.api.port}"


def _answer(response: Any) -> Any:
    """The JSON body of a 2xx answer; otherwise fail with the API's own reason on one line."""
    from marketfleet.cli import fail

    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        fail(f"HTTP {response.status_code}: {detail}")
    return response.json()


@firmware_app.command("keygen")
def keygen(
    key: KeyOption = None,
    force: Annotated[bool, typer.Option(help="replace an existing key (images signed with it stop verifying)")] = False,
) -> None:
    """Create the Ed25519 signing key and print its public half (provision devices with it)."""
    from firmware.signing import generate_keypair, save_keypair
    from marketfleet.cli import fail

    path = _key_path(key)
    if path.exists() and not force:
        fail(f"a signing key already exists at {path}; devices trust it. Use --force to replace it")
    pair = generate_keypair()
    save_keypair(pair, path)
    typer.echo(json.dumps({"key_file": str(path), "key_id": pair.key_id, "public_key": pair.public_key}))


@firmware_app.command("sign")
def sign_image(
    image: Annotated[Path, typer.Argument(help="the image file")],
    key: KeyOption = None,
) -> None:
    """Print an image's SHA-256 and Ed25519 signature (for uploads signed offline: `upload --signature`)."""
    from firmware.signing import SigningKeyError, load_keypair, sign_digest
    from marketfleet.cli import fail

    if not image.is_file():
        fail(f"no such image: {image}")
    try:
        pair = load_keypair(_key_path(key))
    except SigningKeyError as err:
        fail(str(err))
        return
    digest = _sha256(image)
    signature = sign_digest(digest, pair)
    typer.echo(json.dumps({"file": str(image), "size": image.stat().st_size, "sha256": digest,
                              "signature": signature, "key_id": pair.key_id}))  # fmt: skip


@firmware_app.command("verify")
def verify_file(
    image: Annotated[Path, typer.Argument(help="the image file")],
    signature: Annotated[str, typer.Option(help="base64 Ed25519 signature")],
    public_key: Annotated[str, typer.Option(help="base64 public key (GET /api/v1/firmware/signing-key)")],
) -> None:
    """Check an image as a device would: exit 0 when it verifies, 1 with the reason when it does not."""
    from firmware.verify import ImageRejected, verify_digest
    from marketfleet.cli import console, err_console, fail

    if not image.is_file():
        fail(f"no such image: {image}")
    try:
        verify_digest(_sha256(image), signature, public_key)
    except ImageRejected as refused:
        err_console.print(f"refused: {refused}")
        raise typer.Exit(1) from refused
    console.print("verified")


@firmware_app.command("upload")
def upload(
    image: Annotated[Path, typer.Argument(help="the image file")],
    model: Annotated[str, typer.Option(help="your device model's name")],
    version: Annotated[str, typer.Option(help="semantic version, e.g. 1.4.2")],
    api_key: Annotated[str, typer.Option(envvar="MF_VENDOR_KEY", help="your vendor API key")],
    notes: Annotated[str, typer.Option(help="release notes")] = "",
    from_versions: Annotated[str, typer.Option(help="semver range a device must be on, e.g. '>=1.2.0 <2.0.0'")]
    = "*",
    compatible: Annotated[list[str] | None, typer.Option(help="another model that may take it (repeatable)")]
    = None,
    signature: Annotated[str | None, typer.Option(help="signature made offline (`firmware sign`)")] = None,
    url: ApiUrlOption = None,
) -> None:
    """Upload an image for one of your models; the platform hashes and signs it (or checks --signature)."""
    import httpx

    from marketfleet.cli import fail

    if not image.is_file():
        fail(f"no such image: {image}")
    data: dict[str, Any] = {"model": model, "version": version, "release_notes": notes,
                            "from_versions": from_versions, "sha256": _sha256(image)}  # fmt: skip
    if compatible:
        data["compatible_models"] = compatible
    if signature:
        data["signature"] = signature
    try:
        with image.open("rb") as handle:
            response = httpx.post(f"{_api_url(url)}/api/v1/firmware/images", data=data,
                                  files={"file": (image.name, handle, "application/octet-stream")},
                                  headers={"X-API-Key": api_key}, timeout=600)  # fmt: skip
    except httpx.HTTPError as err:
        fail(f"cannot reach the platform at {_api_url(url)}: {err}")
        return
    body = _answer(response)
    typer.echo(json.dumps({k: body[k] for k in ("id", "version", "size", "sha256", "key_id")}))


@ota_app.command("status")
def ota_status(
    campaign_id: Annotated[int, typer.Argument(help="the campaign")],
    token: Annotated[str, typer.Option(envvar="MF_TOKEN", help="an operator's session token or the admin token")],
    url: ApiUrlOption = None,
    follow: Annotated[bool, typer.Option(help="live progress bars until the campaign ends (SSE)")] = True,
) -> None:
    """A campaign's progress per wave; with --follow (the default) live bars until it completes or stops."""
    import httpx

    from marketfleet.cli import console, fail

    base, headers = _api_url(url), {"Authorization": f"Bearer {token}"}
    try:
        if not follow:
            progress = _answer(httpx.get(f"{base}/api/v1/firmware/campaigns/{campaign_id}", headers=headers))
            console.print(summary_line(progress), markup=False, highlight=False)
            for wave in progress["wave_progress"]:
                console.print(wave_line(wave), markup=False, highlight=False)
            return
        with httpx.stream("GET", f"{base}/api/v1/firmware/campaigns/{campaign_id}/events", headers=headers,
                          timeout=httpx.Timeout(10, read=None)) as response:  # fmt: skip
            if response.status_code >= 400:
                response.read()
                _answer(response)
            final = _follow(response.iter_lines())
    except httpx.HTTPError as err:
        fail(f"cannot reach the platform at {base}: {err}")
        return
    if final is not None:
        console.print(summary_line(final), markup=False, highlight=False)
        if final["state"] in ("aborted", "cancelled"):
            raise typer.Exit(1)


def _follow(lines: Any) -> dict[str, Any] | None:
    """Draw one bar per wave from the `progress` events; returns the last progress once `end` arrives."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from marketfleet.cli import err_console

    last: dict[str, Any] | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=err_console) as bars:
        tasks: dict[int, Any] = {}
        event = ""
        for line in lines:
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "progress":
                last = json.loads(line.partition(":")[2])
                for wave in last["wave_progress"]:
                    if wave["index"] not in tasks:
                        tasks[wave["index"]] = bars.add_task(f"wave {wave['index']} {wave['name']}", total=None,
                                                             info="")  # fmt: skip
                    bars.update(tasks[wave["index"]], total=max(wave["size"], 1), info=wave_info(wave),
                                completed=wave["size"] - wave["counts"]["pending"] - _in_flight(wave))  # fmt: skip
            elif line.startswith("data:") and event == "end":
                break
    return last


def _in_flight(wave: dict[str, Any]) -> int:
    counts = wave["counts"]
    return sum(counts[s] for s in ("downloading", "verifying", "installing", "rebooting"))


def wave_info(wave: dict[str, Any]) -> str:
    failures = wave["failures"]
    eta = f" · ETA {wave['eta_s']:.0f}s" if wave.get("eta_s") else ""
    return (f"{wave['counts']['succeeded']} ok · {failures['failed']} failed · {failures['rejected']} rejected · "
            f"{failures['timed_out']} timed out · {_in_flight(wave)} updating{eta}")  # fmt: skip


def wave_line(wave: dict[str, Any]) -> str:
    name = f"wave {wave['index']} {wave['name'] or ''}".strip()
    return f"{name} [{wave['state']}] {wave['done_pct']:.1f}% done: {wave_info(wave)}"


def summary_line(progress: dict[str, Any]) -> str:
    reason = f" ({progress['state_reason']})" if progress.get("state_reason") else ""
    eta = f", ETA {progress['eta_s']:.0f}s" if progress.get("eta_s") else ""
    return (f"campaign {progress['id']} {progress['name']!r}: {progress['state']}{reason}; "
            f"{progress['counts']['succeeded']} of {progress['total']} succeeded, "
            f"{progress['done_pct']:.1f}% done{eta}")  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["firmware_app", "ota_app"]
