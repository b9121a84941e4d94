"""The Django app config: reads ``settings.SONIQ`` and Django's database when Django starts."""

from __future__ import annotations

from django.apps import AppConfig, apps
from django.utils.module_loading import module_has_submodule

from .conf import configure


class SoniqConfig(AppConfig):
    name = "soniq.contrib.django"
    label = "soniq"
    verbose_name = "Soniq"

    def ready(self) -> None:
        options = configure()
        if options.autodiscover:
            # Import each app's jobs module so its @app.job() functions are registered before
            # a view enqueues them or a worker starts.
            from importlib import import_module

            for config in apps.get_app_configs():
                if module_has_submodule(config.module, options.autodiscover):
                    import_module(f"{config.name}.{options.autodiscover}")
