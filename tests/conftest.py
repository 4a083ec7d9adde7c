"""Shared test hygiene."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _restore_x64():
    """`jax_enable_x64` is process-wide: the frontier switches it on for float64 carriers
    (`constructions.check.run.enable_carrier`, also from module-scoped fixtures); put it back after
    each test module so later modules see the default float32 world."""
    before = jax.config.jax_enable_x64
    yield
    if jax.config.jax_enable_x64 != before:
        jax.config.update("jax_enable_x64", before)
