"""The dispatcher alone: order, credit, least-loaded choice, pause, and taking jobs back."""

from __future__ import annotations

from easyjobs.manager.dispatcher import Dispatcher, WorkerState

KEY = ("Q", "t")


def make() -> tuple[Dispatcher, list[tuple[str, str]]]:
    given: list[tuple[str, str]] = []
    return Dispatcher(lambda worker, job: given.append((worker.id, job))), given


def test_jobs_wait_until_a_worker_has_credit_then_go_oldest_first() -> None:
    """Queued jobs are assigned in arrival order once credit arrives, one per credit."""
    dispatcher, given = make()
    dispatcher.add_worker("w", "w")
    dispatcher.serve("w", [KEY])
    for job in ("a", "b", "c"):
        dispatcher.enqueue(job, KEY)
    assert given == []
    dispatcher.grant("w", 2)
    assert given == [("w", "a"), ("w", "b")]
    dispatcher.grant("w", 5)
    assert given == [("w", "a"), ("w", "b"), ("w", "c")]


def test_the_least_loaded_worker_gets_the_job() -> None:
    """Among workers with credit, the one with fewer jobs in flight wins."""
    dispatcher, given = make()
    for worker in ("w1", "w2"):
        dispatcher.add_worker(worker, worker)
        dispatcher.serve(worker, [KEY])
        dispatcher.grant(worker, 10)
    dispatcher.enqueue("a", KEY)
    dispatcher.enqueue("b", KEY)
    assert {worker for worker, _ in given} == {"w1", "w2"}


def test_discarded_jobs_are_never_assigned_and_a_requeued_one_keeps_its_place() -> None:
    """A discarded job's tombstone is skipped; enqueued again, it is assigned exactly once."""
    dispatcher, given = make()
    dispatcher.add_worker("w", "w")
    dispatcher.serve("w", [KEY])
    for job in ("a", "b", "c"):
        dispatcher.enqueue(job, KEY)
    assert dispatcher.discard("a") and dispatcher.discard("b")
    assert not dispatcher.discard("b")  # already out
    dispatcher.enqueue("a", KEY)  # back, with its original place before c
    dispatcher.grant("w", 10)
    assert given == [("w", "a"), ("w", "c")]


def test_discard_is_cheap_for_many_queued_jobs() -> None:
    """Cancelling every one of 50,000 queued jobs leaves nothing to assign (no O(n) rescans)."""
    dispatcher, given = make()
    jobs = [f"j{i}" for i in range(50_000)]
    for job in jobs:
        dispatcher.enqueue(job, KEY)
    for job in jobs:
        assert dispatcher.discard(job)
    dispatcher.add_worker("w", "w")
    dispatcher.serve("w", [KEY])
    dispatcher.grant("w", 10)
    assert given == []


def test_pause_holds_jobs_and_resume_releases_them() -> None:
    """A paused dispatcher assigns nothing; resuming fills workers again."""
    dispatcher, given = make()
    dispatcher.add_worker("w", "w")
    dispatcher.serve("w", [KEY])
    dispatcher.pause(None, True)
    dispatcher.grant("w", 1)
    dispatcher.enqueue("a", KEY)
    assert given == []
    dispatcher.pause(None, False)
    assert given == [("w", "a")]


def test_filling_stops_when_an_assignment_drops_the_worker() -> None:
    """A worker removed while it is being given jobs gets no more of them."""
    given: list[str] = []
    dispatcher: Dispatcher

    def assign(worker: WorkerState, job: str) -> None:
        given.append(job)
        dispatcher.remove_worker(worker.id)  # as a peer dropped while sending would

    dispatcher = Dispatcher(assign)
    dispatcher.add_worker("w", "w")
    dispatcher.serve("w", [KEY])
    dispatcher.enqueue("a", KEY)
    dispatcher.enqueue("b", KEY)
    dispatcher.grant("w", 2)
    assert given == ["a"]
