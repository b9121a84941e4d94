"""Finding instrumentations (tracing, logs, metrics, or another package's) and installing them.

The core imports none of them. ``app.instrument(otel=..., sentry=...)`` looks each keyword up
among the entry points of the group ``soniq.instrumentations`` of the installed packages; the
entry point names a module (or any object) with an ``install(app, config=None)`` function.
Soniq declares its own three in pyproject.toml (``otel``, ``prometheus``, ``logs``); a third
package declares its own the same way, e.g.::

    [project.entry-points."soniq.instrumentations"]
    sentry = "soniq_sentry"

Every install follows one rule, written once here (:func:`install_layer`): the first install
adds the layer; installing again with no config, or an equal one, changes nothing; a different
config replaces the layer in place, which is refused while a worker of the app runs (that worker
started the old layer and will shut it down).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import ConfigurationError
from .middleware import Middleware

if TYPE_CHECKING:
    from .app import Soniq

ENTRY_POINT_GROUP = "soniq.instrumentations"

HOW_TO_ADD = (
    f'a package adds one by declaring an entry point in the group "{ENTRY_POINT_GROUP}" '
    f"naming a module with install(app, config=None), e.g. in its pyproject.toml: "
    f'[project.entry-points."{ENTRY_POINT_GROUP}"] sentry = "soniq_sentry" '
    f"(see docs/hooks-and-middleware.md, 'Write your own instrumentation')"
)


class Instrumentation(Protocol):
    """What an entry point of the group names: something with ``install``."""

    def install(self, app: Soniq, config: Any = None) -> object: ...


def available() -> dict[str, EntryPoint]:
    """The installed instrumentations by name (read from package metadata at each call, so a
    package installed while the process runs is found)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise ConfigurationError(
                f"Two installed packages declare the instrumentation {ep.name!r} "
                f"({other.value} and {ep.value}); uninstall one of them"
            )
        found.setdefault(ep.name, ep)
    return found


def find(names: list[str]) -> dict[str, EntryPoint]:
    """The entry points for ``names``, all checked before any is loaded."""
    found = available()
    unknown = [name for name in names if name not in found]
    if unknown:
        listed = ", ".join(sorted(found)) or "none (is soniq itself installed? pip install -e .)"
        raise ConfigurationError(
            f"No instrumentation named {', '.join(map(repr, unknown))} is installed; "
            f"available: {listed}. To add one, {HOW_TO_ADD}"
        )
    return {name: found[name] for name in names}


def load(ep: EntryPoint) -> Instrumentation:
    plugin = ep.load()
    if not callable(getattr(plugin, "install", None)):
        raise ConfigurationError(
            f"The instrumentation {ep.name!r} ({ep.value}) has no install(app, config=None) "
            f"function; the entry point must name a module or object that has one"
        )
    return plugin  # type: ignore[no-any-return]


def instrument(app: Soniq, wanted: dict[str, Any]) -> None:
    """Install each instrumentation whose value is truthy: ``True`` means its defaults, any
    other value is handed to its ``install`` as the config."""
    chosen = {name: value for name, value in wanted.items() if value}
    if not chosen:
        return  # nothing asked for: no need to read every package's metadata
    for name, ep in find(list(chosen)).items():
        value = chosen[name]
        load(ep).install(app, None if value is True else value)


# ---------------------------------------------------------------------------------------------
# The shared install rule.

L = TypeVar("L", bound=Middleware)
C = TypeVar("C")


def config_from(kind: type[C], config: C | Mapping[str, Any] | None, keyword: str) -> C | None:
    """``config`` as a ``kind``: None stays None (defaults), a ``kind`` is kept, a mapping gives
    the options by name. Anything else, or an unknown option, is refused naming the keyword."""
    if config is None or isinstance(config, kind):
        return config
    if isinstance(config, Mapping):
        if is_dataclass(kind):
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(config) - known)
            if unknown:
                raise TypeError(
                    f"{keyword}=: unknown option(s) {', '.join(unknown)}; "
                    f"{kind.__qualname__} takes {', '.join(sorted(known))}"
                )
        return kind(**config)
    raise TypeError(
        f"{keyword}= takes True, a {kind.__module__}.{kind.__qualname__} or a dict of its "
        f"options, not {config!r}"
    )


def installed(app: Soniq, kind: type[L]) -> L | None:
    """The layer of type ``kind`` in ``app``'s chain, if any."""
    for layer in app.middleware:
        if isinstance(layer, kind):
            return layer
    return None


def install_layer(
    app: Soniq,
    kind: type[L],
    config: C | None,
    build: Callable[[C | None], L],
    *,
    config_of: Callable[[L], C],
    retire: Callable[[L], None] | None = None,
) -> L:
    """Add, keep or replace the telemetry layer of type ``kind``; returns the layer in the chain.

    ``build(config)`` makes a layer (``None``: defaults); ``config_of(layer)`` reads its config
    back for the comparison; ``retire(old)`` (optional) lets the old layer let go of what it
    registered elsewhere before the new one is built.
    """
    existing = installed(app, kind)
    if existing is None:
        layer = build(config)
        app.middleware.add_builtin(layer)
        return layer
    if config is None or config == config_of(existing):
        return existing
    if app.workers:
        raise RuntimeError(
            f"{existing!r} is in use by a running worker; change its configuration "
            f"before starting workers"
        )
    if retire is not None:
        retire(existing)
    layer = build(config)
    app.middleware.replace(existing, layer)
    return layer


class BoundedLabel:
    """Maps raw values (queue names, job names) to label or attribute values, at most ``cap``
    distinct ones; a value past the cap, or one ``allowed`` rejects, becomes ``overflow``.
    Prometheus labels and OpenTelemetry metric attributes are bounded by this one rule."""

    def __init__(
        self, cap: int, overflow: str, allowed: Callable[[str], bool] | None = None
    ) -> None:
        self._cap = cap
        self._overflow = overflow
        self._allowed = allowed
        self._accepted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._accepted:
            return value
        if (
            len(self._accepted) >= self._cap
            or value == self._overflow
            or (self._allowed is not None and not self._allowed(value))
        ):
            # Not remembered: a name registered later may still get its own series.
            return self._overflow
        self._accepted.add(value)
        return value
