"""Login throttling per address and password hashing (issue 11, item 1), on a platform of its own (the
throttle is per process, so the shared `api` fixture's address must not be the one that gets throttled)."""

from __future__ import annotations

from pathlib import Path

from accounts.models import AuditEntry, User
from tests.factories import ADMIN, serve_api, start_test_platform

PASSWORD = "correct horse battery"


async def test_password_spraying_from_one_address_is_throttled_and_passwords_are_argon2id(
    tmp_path: Path, registry_url_factory
) -> None:
    async with start_test_platform(tmp_path, registry_url_factory("sqlite")) as platform, \
            serve_api(platform.app) as api:
        body = {"username": "sprayed", "password": PASSWORD, "role": "manager"}
        assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
        stored = (await User.get(username="sprayed")).password_hash
        assert stored.startswith("$argon2id$") and PASSWORD not in stored

        # One guess each at 20 made-up accounts: no account reaches its own lockout, the address does.
        for n in range(20):
            guess = await api.post("/api/v1/auth/login", json={"username": f"guess{n}", "password": "123456"})
            assert guess.status_code == 401 and "throttled" not in guess.text
        refused = await api.post("/api/v1/auth/login", json={"username": "sprayed", "password": PASSWORD})
        assert refused.status_code in (401, 429) and "too many failed sign-ins" in refused.json()["detail"]
        assert "token" not in refused.json()
        assert await AuditEntry.filter(action="login_throttled", actor="user:sprayed").count() == 1
        assert await AuditEntry.filter(action="login_failed", actor__startswith="user:guess").count() == 20
        # the account itself is not locked: its owner is not punished for someone else's guessing
        assert (await User.get(username="sprayed")).locked_until is None
