"""Benchmarks: Soniq against pgqueuer and a minimal asyncpg loop. Run ``python -m bench``."""
