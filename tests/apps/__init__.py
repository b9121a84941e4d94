"""Soniq apps and helpers for tests that run workers as real processes."""
