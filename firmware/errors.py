"""Errors the firmware package raises on purpose; `api/errors.py` maps their bases to HTTP."""

from __future__ import annotations

from fleet.errors import Conflict, InvalidRequest, NotFound


class IllegalTransition(Conflict):
    """A job or campaign cannot make this move from its current state (the message says which)."""


class ImageInvalid(InvalidRequest):
    """An uploaded image cannot be accepted: bad version, range, compatibility, hash or signature."""


class ImageNotFound(NotFound):
    """No such image, or not one the caller may see."""


class CampaignNotFound(NotFound):
    """No such campaign."""


class JobNotFound(NotFound):
    """A status names a job that does not exist or is not the reporting device's."""
