"""Glue for web frameworks: :mod:`soniq.integrations.fastapi` (FastAPI and Starlette). Django's
is :mod:`soniq.contrib.django`."""
