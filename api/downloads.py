"""Content-Disposition for downloads whose file name comes from the request (a pack name, a market code).

A raw name in the header lets a client put control characters or quotes there, which the server then cannot
send (a 500) or which split the header. The ASCII fallback keeps letters, digits and `._-`; the full name
travels percent-encoded in `filename*` (RFC 6266), so Chinese names still arrive intact.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(filename: str) -> dict[str, str]:
    fallback = _UNSAFE.sub("_", filename).strip("._") or "download"
    encoded = quote(filename[:200])
    return {"Content-Disposition": f"attachment; filename=\"{fallback[:100]}\"; filename*=UTF-8''{encoded}"}
