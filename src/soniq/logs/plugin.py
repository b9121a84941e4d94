"""The ``logs`` instrumentation: what the ``soniq.instrumentations`` entry point ``logs`` names.

``app.instrument(logs=True)`` loads this module through that entry point and calls
:func:`install`, which adds :class:`~soniq.logs.middleware.LogMiddleware`. The core never
imports it: the rest of :mod:`soniq.logs` (formatters, the context filter, the default failure
log, the CLI's logging set-up) is plain logging, with no layer of the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.instrumentation import config_from, install_layer

from .context_filter import attach_context_filter
from .middleware import LogConfig, LogMiddleware

if TYPE_CHECKING:
    from soniq.app import Soniq


def install(app: Soniq, config: LogConfig | Mapping[str, Any] | None = None) -> LogMiddleware:
    """Add the log layer to ``app`` (what ``app.instrument(logs=...)`` calls, found through
    the ``soniq.instrumentations`` entry point ``logs``); returns the layer in the chain.

    Installing again with no config, or an equal one, changes nothing; a different config
    replaces the layer in place, refused while a worker of the app runs (the rule of
    :func:`soniq.instrumentation.install_layer`, shared by every instrumentation).
    """
    wanted = config_from(LogConfig, config, "logs")
    layer = install_layer(
        app, LogMiddleware, wanted, LogMiddleware, config_of=lambda layer: layer.config
    )
    if layer.config.attach_context_filter:
        attach_context_filter()
    return layer
