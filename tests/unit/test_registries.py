"""The names config validates against are the registries' own names.

config sits below routing, state and the simulators (test_layering.py), so it cannot read
their registries; this test ties each list it checks against to the registry it names.
"""

from __future__ import annotations

import importlib

from router import routing, state
from router.config import model, providers
from router.sim import dialects

config_load = importlib.import_module("router.config.load")  # `router.config.load` is also a function


def test_routing_strategies_are_the_registry() -> None:
    assert set(model.STRATEGIES) == set(routing.STRATEGIES)


def test_state_schemes_are_the_store_backends() -> None:
    assert set(config_load.STATE_SCHEMES) == set(state.BACKENDS)


def test_dialects_are_the_simulated_dialects() -> None:
    assert set(providers.DIALECTS) == set(dialects.DIALECTS)
