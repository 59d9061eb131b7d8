"""The notification payloads managers send each other, as text (no database)."""

from __future__ import annotations

import base64

import msgpack

from easyjobs.store.signals import MAX_PAYLOAD, OUTCOME_PREFIX, Signals


def test_every_kind_of_news_survives_a_round_trip() -> None:
    news = Signals(ready={("ETL", "extract"), ("q,1", "t\n\x1e")}, done={"a", 'b"c'},
                   cancelled={"a"}, tasks=True, pause=False, origin="m1")
    payload = news.encode()
    assert Signals.decode(payload) == news
    assert payload.splitlines()[0] == 'ready [["ETL","extract"],["q,1","t\\n\\u001e"]]'


def test_the_payload_is_exact_text() -> None:
    """The format is what other managers (of other versions) parse: pinned byte for byte."""
    assert Signals(done={"j2", "j1"}, tasks=True, pause=True).encode() == (
        'done ["j1","j2"]\ntasks\npause 1')
    assert Signals().encode() == ""
    assert not Signals.decode("")


def test_a_list_too_long_for_postgresql_becomes_a_wildcard() -> None:
    """Over 8000 bytes the longest list is replaced by ``*``; the short ones stay."""
    news = Signals(done={f"{n:032x}" for n in range(400)}, ready={("Q", "t")})
    payload = news.encode()
    assert len(payload.encode()) <= MAX_PAYLOAD
    heard = Signals.decode(payload)
    assert heard.all_done and not heard.done
    assert heard.ready == {("Q", "t")} and not heard.all_ready


def test_unknown_and_malformed_lines_are_skipped() -> None:
    heard = Signals.decode('future stuff\ndone not-json\nready [["only-one"],7]\n'
                           'cancel ["k"]\ndone ["k", 3]\npause 2\ntasks')
    assert heard == Signals(done={"k"}, tasks=True)


def test_merging_the_news_of_several_writes() -> None:
    news = Signals(done={"a"})
    news.merge(Signals(done={"b"}, ready={("Q", "t")}, all_ready=True, pause=True))
    assert news == Signals(done={"a", "b"}, ready={("Q", "t")}, all_ready=True, pause=True)
    assert bool(news) and not Signals()


def test_credentials_news_round_trips_and_merges() -> None:
    """A bare ``credentials`` line: other managers re-read them all (nothing secret is sent)."""
    news = Signals(credentials=True, origin="m1")
    assert news.encode() == "credentials\nfrom m1"
    assert Signals.decode(news.encode()) == news
    assert bool(Signals(credentials=True))
    assert Signals.decode('done ["j"]\ncredentials') == Signals(done={"j"}, credentials=True)
    merged = Signals(done={"j"})
    merged.merge(Signals(credentials=True))
    assert merged == Signals(done={"j"}, credentials=True)
    merged.merge(Signals(tasks=True))
    assert merged.credentials and merged.tasks


def test_directory_news_round_trips_and_merges() -> None:
    """A bare ``workers`` line: a manager's address or served tasks changed; an older
    manager, which knows no such line, skips it and keeps the rest."""
    news = Signals(workers=True, origin="m1")
    assert news.encode() == "workers\nfrom m1"
    assert Signals.decode(news.encode()) == news
    assert bool(Signals(workers=True))
    merged = Signals(done={"j"})
    merged.merge(Signals(workers=True))
    assert merged == Signals(done={"j"}, workers=True)


def test_the_sender_is_read_without_decoding_the_outcomes() -> None:
    """``origin_of`` finds the ``from`` line before the outcome tokens (a manager skips its
    own news with it); a payload without one has no origin."""
    news = Signals(done={"a"}, tasks=True, origin="m1")
    assert Signals.origin_of(news.encode() + OUTCOME_PREFIX + "not-base64!") == "m1"
    assert Signals.origin_of(Signals(workers=True, origin="m2").encode()) == "m2"
    assert Signals.origin_of("ready *\nworkers") is None
    assert Signals.origin_of('done ["from x"]') is None


def test_outcomes_ride_as_tokens_the_store_appends() -> None:
    """``tokens`` encodes each outcome; a payload ending in them decodes to the outcomes."""
    news = Signals(done={"a", "b"}, outcomes={
        "a": ("succeeded", {"x": b"\x00", 1: [2.5]}, None),
        "b": ("failed", None, {"type": "E", "message": "m", "traceback": ""})})
    payload = news.encode()
    carried = news.tokens(MAX_PAYLOAD - len(payload))
    assert [(job, status) for job, status, _ in carried] == [("a", "succeeded"), ("b", "failed")]
    heard = Signals.decode(payload + OUTCOME_PREFIX + " ".join(t for _, _, t in carried))
    assert heard == news


def test_outcomes_that_do_not_fit_are_left_out() -> None:
    """Only what fits the room is carried; a result too big alone never is."""
    news = Signals(done={"big", "small"}, outcomes={"big": ("succeeded", "x" * MAX_PAYLOAD, None),
                                                   "small": ("succeeded", 1, None)})
    assert [job for job, _, _ in news.tokens(MAX_PAYLOAD)] == ["small"]
    assert news.tokens(len(OUTCOME_PREFIX) + 4) == []


def test_malformed_outcome_tokens_are_skipped() -> None:
    good = Signals(outcomes={"k": ("succeeded", 3, None)}).tokens(MAX_PAYLOAD)[0][2]
    wrong = base64.b64encode(msgpack.packb(["k", "failed", None, {"type": 1}])).decode()
    heard = Signals.decode(f'done ["k"]{OUTCOME_PREFIX}%%% {wrong} e30= {good}')
    assert heard.outcomes == {"k": ("succeeded", 3, None)}


def test_the_first_outcome_of_a_job_wins_a_merge() -> None:
    news = Signals(done={"a"}, outcomes={"a": ("cancelled", None, None)})
    news.merge(Signals(done={"a"}, outcomes={"a": ("succeeded", 1, None)}))
    assert news.outcomes == {"a": ("cancelled", None, None)}
