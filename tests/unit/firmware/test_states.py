"""The job and campaign state machines refuse every move they do not have."""

from __future__ import annotations

import typing

import pytest

from firmware.errors import IllegalTransition
from firmware.states import (
    CampaignAction,
    CampaignState,
    FailureKind,
    JobOp,
    JobState,
    campaign_transition,
    cancel_transition,
    classify_failure,
    device_transition,
    retry_transition,
)
from fleet.kinds import OtaStatus

P, D, V, N, R, S, F, C = (JobState.PENDING, JobState.DOWNLOADING, JobState.VERIFYING, JobState.INSTALLING,
                          JobState.REBOOTING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)  # fmt: skip


def test_an_install_walks_the_chain_to_success() -> None:
    state = P
    for step in (D, V, N, R, S):
        state = device_transition(state, step)
    assert state == S


@pytest.mark.parametrize("current", [P, D, V, N, R])
def test_failure_is_possible_from_every_unfinished_step(current: JobState) -> None:
    assert device_transition(current, F) == F


@pytest.mark.parametrize(
    ("current", "reported"),
    [(P, S), (P, N), (D, S), (D, R), (V, D), (R, N), (S, D), (S, F), (F, S), (F, D), (C, D), (C, S)],
)
def test_skips_and_backward_steps_are_illegal(current: JobState, reported: JobState) -> None:
    with pytest.raises(IllegalTransition):
        device_transition(current, reported)


def test_repeating_the_current_step_is_a_progress_update() -> None:
    assert device_transition(D, D) == D


def test_a_rollback_has_nothing_to_download() -> None:
    assert device_transition(P, R, JobOp.ROLLBACK) == R
    with pytest.raises(IllegalTransition):
        device_transition(P, D, JobOp.ROLLBACK)


def test_only_unfinished_jobs_can_be_cancelled_and_succeeded_ones_not_retried() -> None:
    assert cancel_transition(D) == C
    assert retry_transition(F) == P
    assert retry_transition(N) == P  # a timeout mid-install
    with pytest.raises(IllegalTransition):
        cancel_transition(S)
    with pytest.raises(IllegalTransition):
        retry_transition(S)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("hash_mismatch", FailureKind.REJECTED), ("bad_signature: key", FailureKind.REJECTED),
     ("timeout: 30s", FailureKind.TIMED_OUT), ("flash_write_error", FailureKind.FAILED), (None, FailureKind.FAILED)],
)  # fmt: skip
def test_failure_reasons_are_classified_for_abort_rules(reason: str | None, kind: FailureKind) -> None:
    assert classify_failure(reason) == kind


def test_campaign_moves() -> None:
    assert campaign_transition(CampaignState.RUNNING, CampaignAction.PAUSE) == CampaignState.PAUSED
    assert campaign_transition(CampaignState.PAUSED, CampaignAction.RESUME) == CampaignState.RUNNING
    assert campaign_transition(CampaignState.PAUSED, CampaignAction.ABORT) == CampaignState.ABORTED
    assert campaign_transition(CampaignState.ABORTED, CampaignAction.RETRY_FAILED) == CampaignState.RUNNING
    with pytest.raises(IllegalTransition, match="cannot resume a completed campaign"):
        campaign_transition(CampaignState.COMPLETED, CampaignAction.RESUME)
    with pytest.raises(IllegalTransition):
        campaign_transition(CampaignState.CANCELLED, CampaignAction.RETRY_FAILED)


def test_the_status_event_schema_names_exactly_the_device_reported_states() -> None:
    reportable = set(typing.get_args(OtaStatus.model_fields["state"].annotation))
    assert reportable == {s.value for s in JobState} - {"pending", "cancelled"}
