"""The job lifecycle table and the record's guarded status changes."""

from __future__ import annotations

import pytest

from easyjobs.jobs import TERMINAL, TRANSITIONS, UNFINISHED, JobRecord, JobStatus, derived_job_id

from .utils import is_job_id


@pytest.mark.parametrize(("old", "new"), [
    (old, new) for old in JobStatus for new in JobStatus
])
def test_move_follows_the_table(old: JobStatus, new: JobStatus) -> None:
    """A move the table allows changes the status; any other raises and changes nothing."""
    record = JobRecord(id="0" * 32, queue="q", task="t", status=old)
    if new in TRANSITIONS[old]:
        record.move(new)
        assert record.status is new
    else:
        with pytest.raises(ValueError, match="illegal transition"):
            record.move(new)
        assert record.status is old


def test_terminal_statuses_have_no_way_out() -> None:
    """Finished jobs stay finished; every unfinished status can still reach an end."""
    assert all(not TRANSITIONS[status] for status in TERMINAL)
    assert all(TRANSITIONS[status] & TERMINAL for status in UNFINISHED)


def test_derived_ids_are_stable_and_sort_with_their_parent() -> None:
    """The same parent and role give the same id (re-sent submits stay idempotent)."""
    parent = "01a2239684602ff5ec692eeab81ba3a9"
    first = derived_job_id(parent, "run_before", "prepare_db")
    assert first == derived_job_id(parent, "run_before", "prepare_db")
    assert first != derived_job_id(parent, "run_before", "deploy_environment")
    assert is_job_id(first) and first[:12] == parent[:12]
