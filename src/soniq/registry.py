"""The job registry: what each job name means, checked once when the job is declared."""

from __future__ import annotations

import difflib
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .backoff import Backoff
from .context import JobContext
from .errors import ConfigurationError, JobArgumentsError, UnknownJobError
from .unique import Unique

TraceParent = Literal["child", "link", "none"]


def _make_compact_json() -> Callable[[Any], str]:
    """``json.dumps(obj, separators=(",", ":"), allow_nan=False)``, built once.

    json.dumps and JSONEncoder.encode build the C encoder again on every call, which costs as
    much as encoding a small dict; this keeps one. Without the circular-reference check (that
    needs a fresh table per call), a self-containing value raises RecursionError instead of
    ValueError; callers treat both as "not JSON-serialisable".
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

    def refuse(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encoder = make(
        None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def compact_json(value: Any) -> str:
        return "".join(encoder(value, 0))

    return compact_json


compact_json = _make_compact_json()

# What encoding a value that is not plain JSON raises.
NOT_JSON = (TypeError, ValueError, RecursionError)


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Callable[..., Any]
    queue: str
    max_retries: int
    priority: int
    timeout: float | None
    backoff: Backoff
    is_async: bool
    context_param: str | None
    signature: inspect.Signature
    trace_parent: TraceParent | None = None
    unique: Unique | None = None  # soniq.unique: dedupe rule, None for none
    max_snoozes: int | None = None  # soniq.control.Snooze: None for no limit
    # Derived from ``signature`` once, so enqueue checks arguments with two set operations.
    _accepted: frozenset[str] = field(init=False, repr=False, compare=False)
    _required: frozenset[str] = field(init=False, repr=False, compare=False)
    _any_keyword: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = self.signature.parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = frozenset(p.name for p in params if p.kind in named)
        required = frozenset(
            p.name for p in params if p.kind in named and p.default is inspect.Parameter.empty
        )
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        object.__setattr__(self, "_accepted", accepted)
        object.__setattr__(self, "_required", required)
        object.__setattr__(self, "_any_keyword", any_keyword)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "func": self.func,
            "queue": self.queue,
            "max_retries": self.max_retries,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "timeout": self.timeout,
            "backoff": self.backoff,
            "is_async": self.is_async,
            "trace_parent": self.trace_parent,
            "unique": self.unique,
            "max_snoozes": self.max_snoozes,
        }

    def bind(self, kwargs: dict[str, Any]) -> str:
        """Check ``kwargs`` against the signature and return them as JSON text."""
        if self.context_param is not None and self.context_param in kwargs:
            raise JobArgumentsError(
                f"Job {self.name!r}: {self.context_param!r} is filled in by Soniq with the "
                f"JobContext; do not pass it to enqueue"
            )
        keys = kwargs.keys()
        if not (keys >= self._required and (self._any_keyword or keys <= self._accepted)):
            raise JobArgumentsError(self._misfit(kwargs))
        try:
            return compact_json(kwargs)
        except NOT_JSON:
            raise JobArgumentsError(_unserialisable(self.name, kwargs)) from None

    def _misfit(self, kwargs: dict[str, Any]) -> str:
        """Every problem at once: each unexpected name (with the closest parameter it may be a
        typo of), each missing required one, and the signature to compare with."""
        problems = []
        if not self._any_keyword:
            # A typo is most likely of a parameter not given yet; else of any parameter.
            untaken = [p for p in self.signature.parameters if p in self._accepted - kwargs.keys()]
            for key in kwargs:
                if key in self._accepted:
                    continue
                close = difflib.get_close_matches(key, untaken, n=1) or difflib.get_close_matches(
                    key, list(self._accepted), n=1
                )
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unexpected keyword argument {key!r}{hint}")
        problems += [
            f"missing required argument {name!r}"
            for name in self.signature.parameters
            if name in self._required and name not in kwargs
        ]
        return (
            f"Job {self.name!r} cannot take these arguments: {'; '.join(problems)}. Its "
            f"signature is {self.func.__name__}{_readable(self.signature)}; pass keyword "
            f"arguments that match it"
        )


class _Annotation:
    """An annotation kept as text (``from __future__ import annotations``), shown unquoted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _readable(signature: inspect.Signature) -> str:
    """``(tag: str, n: int = 1)`` rather than ``(tag: 'str', n: 'int' = 1)``."""

    def plain(annotation: Any) -> Any:
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    params = [p.replace(annotation=plain(p.annotation)) for p in signature.parameters.values()]
    return str(
        signature.replace(parameters=params, return_annotation=plain(signature.return_annotation))
    )


def _unserialisable(job_name: str, kwargs: dict[str, Any]) -> str:
    for key, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except NOT_JSON as exc:
            return (
                f"Job {job_name!r}: argument {key!r} ({type(value).__name__}) is not "
                f"JSON-serialisable ({exc}). Pass plain JSON values (str, int, float, bool, "
                f"None, list, dict), e.g. an id or an ISO date string instead of an object"
            )
    return f"Job {job_name!r}: arguments are not JSON-serialisable"


class JobRegistry:
    """Name -> JobSpec. ``get_job`` returns a plain dict, as the hooks page documents."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobSpec] = {}

    def add(self, spec: JobSpec) -> None:
        existing = self._jobs.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ConfigurationError(
                f"Two different functions are registered as job {spec.name!r}; "
                f"give one of them another name with @app.job(name=...)"
            )
        self._jobs[spec.name] = spec

    def remove(self, name: str) -> None:
        self._jobs.pop(name, None)

    def get_job(self, name: str) -> dict[str, Any] | None:
        spec = self._jobs.get(name)
        return None if spec is None else spec.as_dict()

    def spec(self, name: str) -> JobSpec:
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none yet"
            raise UnknownJobError(
                f"No job named {name!r} is registered (registered: {known}). Declare it with "
                f"@app.job() in a module that is imported before enqueueing"
            ) from None

    def find(self, name: str) -> JobSpec | None:
        return self._jobs.get(name)

    def names(self) -> list[str]:
        return list(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)


def make_spec(
    func: Callable[..., Any],
    *,
    name: str | None,
    queue: str,
    max_retries: int,
    priority: int,
    timeout: float | None,
    backoff: Backoff,
    trace_parent: TraceParent | None,
) -> JobSpec:
    if not callable(func):
        raise TypeError(f"@app.job() decorates a function, not {func!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be an int >= 0, not {max_retries!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority must be an int (lower runs first), not {priority!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    if trace_parent not in (None, "child", "link", "none"):
        raise ConfigurationError(
            f"trace_parent must be 'child', 'link' or 'none', not {trace_parent!r}"
        )
    signature = inspect.signature(func)
    context_param = _context_param(func, signature)
    if context_param is not None:
        signature = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != context_param]
        )
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigurationError(
                f"Job {func.__qualname__}: positional-only parameter {param.name!r} cannot be "
                f"filled from enqueue keyword arguments; make it a regular parameter"
            )
    return JobSpec(
        name=name or f"{func.__module__}.{func.__qualname__}",
        func=func,
        queue=queue,
        max_retries=max_retries,
        priority=priority,
        timeout=float(timeout) if timeout is not None else None,
        backoff=backoff,
        is_async=inspect.iscoroutinefunction(func),
        context_param=context_param,
        signature=signature,
        trace_parent=trace_parent,
    )


def _context_param(func: Callable[..., Any], signature: inspect.Signature) -> str | None:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        # Unresolvable forward references: fall back to the raw annotations.
        hints = {p.name: p.annotation for p in signature.parameters.values()}
    for pname, hint in hints.items():
        if pname != "return" and (hint is JobContext or hint == "JobContext"):
            return pname
    return None
