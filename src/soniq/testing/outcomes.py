"""What happened to each attempt a test ran: :class:`Outcome`, and lists of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsIndex, get_args, overload

from ..errors import SoniqError

#: Every fate of an attempt. ``snoozed`` and ``cancelled`` are the values a job that snoozes
#: itself or is cancelled while running ends with; the kit reports whatever the chain settled.
OutcomeName = Literal["done", "retry", "dead_letter", "snoozed", "cancelled"]
OUTCOME_NAMES: tuple[OutcomeName, ...] = get_args(OutcomeName)
# The Literal is what type checkers see; it spells the chain's own list, jobs.Outcome
# (tests/test_jobs.py checks the two agree).


class DrainLimitExceeded(SoniqError, RuntimeError):
    """A drain (or an inline enqueue) ran its bound of attempts and jobs were still coming:
    usually a job that enqueues itself or a job that enqueues it in turn."""


@dataclass(frozen=True)
class Outcome:
    """One attempt of one job, as the chain settled it."""

    job_name: str
    job_id: str
    attempt: int
    outcome: OutcomeName
    #: What the job returned, as the database would keep it (through JSON); None unless done.
    result: Any = None
    #: What the attempt raised; None when it succeeded.
    error: BaseException | None = None
    queue: str = "default"
    args: dict[str, Any] = field(default_factory=dict)
    #: Seconds until the next attempt, for a retry.
    retry_delay: float | None = None
    #: The job's function, so outcomes can be looked up by it.
    func: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "done"

    def __str__(self) -> str:
        what = f"{self.job_name}#{self.attempt} {self.outcome}"
        if self.error is not None:
            what += f" ({type(self.error).__name__}: {self.error})"
        elif self.outcome == "done" and self.result is not None:
            what += f" -> {self.result!r}"
        return what


class Outcomes(list[Outcome]):
    """The outcomes of a run, in the order the attempts finished, with a few finders."""

    def of(self, job: str | Callable[..., Any]) -> Outcomes:
        """The outcomes of one job, by name or by its function."""
        return Outcomes(o for o in self if _is(o, job))

    def with_outcome(self, *names: OutcomeName) -> Outcomes:
        return Outcomes(o for o in self if o.outcome in names)

    @property
    def done(self) -> Outcomes:
        return self.with_outcome("done")

    @property
    def failed(self) -> Outcomes:
        """Attempts that raised (retried or dead-lettered)."""
        return Outcomes(o for o in self if o.error is not None)

    def results(self, job: str | Callable[..., Any] | None = None) -> list[Any]:
        """Results of the attempts that succeeded (of one job, if given)."""
        return [o.result for o in (self if job is None else self.of(job)) if o.ok]

    def assert_all_done(self) -> None:
        """Fail, listing every attempt that did not succeed with its error."""
        bad = [o for o in self if not o.ok]
        if bad:
            raise AssertionError(
                f"{len(bad)} of {len(self)} attempt(s) did not succeed:\n"
                + "\n".join(f"  - {o}" for o in bad)
            )

    @overload
    def __getitem__(self, index: SupportsIndex) -> Outcome: ...
    @overload
    def __getitem__(self, index: slice) -> Outcomes: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Outcome | Outcomes:
        if isinstance(index, slice):
            return Outcomes(super().__getitem__(index))
        return super().__getitem__(index)

    def __str__(self) -> str:
        return "\n".join(str(o) for o in self) or "(no attempts)"


def _is(outcome: Outcome, job: str | Callable[..., Any]) -> bool:
    if isinstance(job, str):
        return outcome.job_name == job
    return outcome.func is job
