"""The state machines of a device's firmware job and of a campaign. Pure: no I/O.

A job moves forward one step at a time as the device reports it; the platform may only queue it again (retry)
or cancel it. Everything else is an illegal transition and is refused, so a confused or malicious device cannot
turn a failed update into a success or walk a job backwards.

    pending ─▶ downloading ─▶ verifying ─▶ installing ─▶ rebooting ─▶ succeeded
       │            │              │             │            │
       └────────────┴──────────────┴─────────────┴────────────┴──▶ failed (reason)
    rollback jobs (A/B slot switch, nothing to download): pending ─▶ rebooting ─▶ succeeded | failed
"""

from __future__ import annotations

from enum import StrEnum

from firmware.errors import IllegalTransition


class JobState(StrEnum):
    PENDING = "pending"  # queued, or announced and not yet started by the device
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobOp(StrEnum):
    INSTALL = "install"
    ROLLBACK = "rollback"  # switch back to the other A/B slot


class FailureKind(StrEnum):
    """Why a job failed, as abort rules count it (the classes AWS IoT Jobs and hawkBit use)."""

    FAILED = "failed"  # something went wrong on the way (download, flash, boot): worth retrying
    REJECTED = "rejected"  # the device refused the image (hash, signature, compatibility): retrying cannot help
    TIMED_OUT = "timed_out"  # no final answer within the per-device timeout


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
IN_PROGRESS = frozenset({JobState.DOWNLOADING, JobState.VERIFYING, JobState.INSTALLING, JobState.REBOOTING})
NOT_TERMINAL = frozenset(JobState) - TERMINAL

_INSTALL_STEPS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.DOWNLOADING, JobState.FAILED}),
    JobState.DOWNLOADING: frozenset({JobState.VERIFYING, JobState.FAILED}),
    JobState.VERIFYING: frozenset({JobState.INSTALLING, JobState.FAILED}),
    JobState.INSTALLING: frozenset({JobState.REBOOTING, JobState.FAILED}),
    JobState.REBOOTING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
}
_ROLLBACK_STEPS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.REBOOTING, JobState.FAILED}),
    JobState.REBOOTING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
}

# Reasons a device gives when it refuses the image itself; firmware/verify.py raises the first three.
REJECTION_REASONS = frozenset(
    {"hash_mismatch", "bad_signature", "size_mismatch", "incompatible", "unknown_key", "declined", "downgrade"}
)


def device_transition(current: JobState, reported: JobState, op: JobOp = JobOp.INSTALL) -> JobState:
    """The job's next state when the device reports `reported`; the same state again is a progress update.

    Raises IllegalTransition for a step the state machine does not have.
    """
    if reported == current and current not in TERMINAL:
        return current
    steps = _ROLLBACK_STEPS if op == JobOp.ROLLBACK else _INSTALL_STEPS
    if reported in steps.get(current, frozenset()):
        return reported
    raise IllegalTransition(f"a {op.value} job cannot go from {current.value} to {reported.value}")


def retry_transition(current: JobState) -> JobState:
    """Queue a job again: after a failure, or after a timeout in any unfinished state."""
    if current in (JobState.SUCCEEDED, JobState.CANCELLED):
        raise IllegalTransition(f"a {current.value} job cannot be retried")
    return JobState.PENDING


def cancel_transition(current: JobState) -> JobState:
    if current in TERMINAL:
        raise IllegalTransition(f"a {current.value} job cannot be cancelled")
    return JobState.CANCELLED


def classify_failure(reason: str | None) -> FailureKind:
    """Sort a device's failure reason into the class abort rules count (first word, before ':')."""
    head = (reason or "").split(":", 1)[0].strip().lower()
    if head == "timeout":
        return FailureKind.TIMED_OUT
    return FailureKind.REJECTED if head in REJECTION_REASONS else FailureKind.FAILED


# ---------------------------------------------------------------- campaigns


class CampaignState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its start time
    RUNNING = "running"
    PAUSED = "paused"  # by a person, or because a wave cannot reach its success threshold
    COMPLETED = "completed"
    ABORTED = "aborted"  # an abort rule fired
    CANCELLED = "cancelled"


class CampaignAction(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    ABORT = "abort"
    COMPLETE = "complete"
    RETRY_FAILED = "retry_failed"


_CAMPAIGN_MOVES: dict[CampaignAction, dict[CampaignState, CampaignState]] = {
    CampaignAction.START: {CampaignState.SCHEDULED: CampaignState.RUNNING},
    CampaignAction.PAUSE: {CampaignState.RUNNING: CampaignState.PAUSED, CampaignState.SCHEDULED: CampaignState.PAUSED},
    CampaignAction.RESUME: {CampaignState.PAUSED: CampaignState.RUNNING},
    CampaignAction.CANCEL: {
        CampaignState.SCHEDULED: CampaignState.CANCELLED,
        CampaignState.RUNNING: CampaignState.CANCELLED,
        CampaignState.PAUSED: CampaignState.CANCELLED,
    },
    # A paused campaign's devices still finish and report; the abort rules keep watching them.
    CampaignAction.ABORT: {CampaignState.RUNNING: CampaignState.ABORTED, CampaignState.PAUSED: CampaignState.ABORTED},
    CampaignAction.COMPLETE: {CampaignState.RUNNING: CampaignState.COMPLETED},
    CampaignAction.RETRY_FAILED: {
        CampaignState.RUNNING: CampaignState.RUNNING,
        CampaignState.PAUSED: CampaignState.RUNNING,
        CampaignState.COMPLETED: CampaignState.RUNNING,
        CampaignState.ABORTED: CampaignState.RUNNING,
    },
}

FINISHED_CAMPAIGN = frozenset({CampaignState.COMPLETED, CampaignState.ABORTED, CampaignState.CANCELLED})


def campaign_transition(current: CampaignState, action: CampaignAction) -> CampaignState:
    moves = _CAMPAIGN_MOVES[action]
    if current not in moves:
        allowed = ", ".join(s.value for s in moves)
        raise IllegalTransition(f"cannot {action.value.replace('_', ' ')} a {current.value} campaign (only {allowed})")
    return moves[current]
