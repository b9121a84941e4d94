"""The claim-ahead estimator on its own: pure arithmetic, no database."""

from __future__ import annotations

import pytest

from soniq.claim_ahead import ClaimAhead


def run(est: ClaimAhead, *, starts: int, trip: float, trips: int, last: bool = False) -> float:
    """``trips`` round trips of ``trip`` seconds each, ``starts`` jobs started during each."""
    now = 0.0
    for _ in range(trips):
        for _ in range(starts):
            est.started(last)
        sent = now
        now += trip
        est.round_trip(sent, now)
    return now


def test_a_new_worker_claims_nothing_ahead() -> None:
    est = ClaimAhead(prefetch=100)
    assert est.ahead() == 0


def test_steady_fast_jobs_claim_three_round_trips_of_starts() -> None:
    est = ClaimAhead(prefetch=1000)
    # 20 starts per 10 ms round trip: 2000 jobs/s; three trips hold 60 starts.
    run(est, starts=20, trip=0.01, trips=200)
    assert est.start_rate == pytest.approx(2000, rel=1e-6)
    assert est.trip_time == pytest.approx(0.01, rel=1e-6)
    assert est.ahead() == 60


def test_prefetch_caps_the_count() -> None:
    est = ClaimAhead(prefetch=5)
    run(est, starts=20, trip=0.01, trips=200)
    assert est.ahead() == 5


def test_prefetch_zero_claims_nothing_ahead() -> None:
    est = ClaimAhead(prefetch=0)
    run(est, starts=20, trip=0.01, trips=200)
    assert est.ahead() == 0


def test_slow_jobs_claim_at_most_one_ahead() -> None:
    est = ClaimAhead(prefetch=100)
    # One start per second, 5 ms round trips: 0.015 jobs per three trips rounds up to one.
    now = 0.0
    for _ in range(100):
        est.started(False)
        est.round_trip(now + 0.995, now + 1.0)
        now += 1.0
    assert est.ahead() == 1


def test_it_grows_from_nothing_as_the_worker_runs_through_what_it_has() -> None:
    est = ClaimAhead(prefetch=1000)
    seen = []
    now = 0.0
    held = 1
    for _ in range(30):
        for _ in range(held):  # the worker starts everything it held
            est.started(False)
        est.round_trip(now, now + 0.01)
        now += 0.01
        held = max(1, est.ahead())
        seen.append(held)
    assert seen == sorted(seen)
    assert seen[-1] > 100


def test_jobs_whose_start_is_written_first_reduce_the_count() -> None:
    plain, last = ClaimAhead(prefetch=1000), ClaimAhead(prefetch=1000)
    run(plain, starts=20, trip=0.01, trips=200)
    run(last, starts=20, trip=0.01, trips=200, last=True)
    assert last.written_first == pytest.approx(1.0)
    assert last.ahead() <= 1  # the share approaches 1 and never quite gets there
    assert plain.ahead() == 60


def test_the_rate_follows_a_change_of_pace() -> None:
    est = ClaimAhead(prefetch=1000)
    now = run(est, starts=20, trip=0.01, trips=200)
    for _ in range(200):  # the jobs got slow: nothing starts for a while
        est.round_trip(now, now + 0.01)
        now += 0.01
    assert est.start_rate < 1.0
    assert est.ahead() <= 1


def test_a_round_trip_at_the_same_instant_leaves_the_rate_alone() -> None:
    est = ClaimAhead(prefetch=1000)
    now = run(est, starts=20, trip=0.01, trips=200)
    rate = est.start_rate
    est.started(False)
    est.round_trip(now, now)  # no time passed since the last trip: no rate to measure
    assert est.start_rate == rate
