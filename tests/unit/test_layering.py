"""The dependency direction of DESIGN-NOTES, checked by walking imports with ast.

Each third-party library lives in one module; lower layers never import higher ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "router"

# Third-party libraries that may be imported only by the named modules.
ONLY_IN = {
    "httpx": set(),  # the tests' client; router speaks to providers through http1
    "aiohttp": set(),
    "redis": {"state.redis", "state.redis.connection", "state.redis.stream"},
    "hiredis": {"state.redis.connection"},
    "psycopg": {"export.postgres"},
    "prometheus_client": {"metrics"},
    "uvicorn": {"serve", "edge"},
    "httptools": {"sim.http", "http1.connection", "edge"},
    "yaml": {"config.load"},
}

# Lower layers first; a module may import only modules of its own layer or below.
LAYERS = [
    {"types", "errors", "redact", "egress"},
    {"config", "sse", "context", "http1", "state", "watchdog"},
    {
        "translate",
        "api",
        "capabilities",
        "envelope",
        "aggregate",
        "validate",
        "classify",
        "relay",
        "upstream",
        "auth",
        "middleware",
        "disconnect",
        "failover",
        "limits",
        "metrics",
        "logs",
        "access",
    },
    {"health", "responses", "call", "sim", "export"},
    {"routing", "attempt", "failover", "refusals", "records"},
    {"outcome"},
    {"ledger", "steps", "recovery"},
    {"admission"},
    {"settlement"},
    {"race"},
    {"proxy"},
    {"exchange", "runtime", "probes"},
    {"gauges", "reload"},
    {"handlers"},
    {"admin"},
    {"app", "edge"},
    {"serve"},
    {"cli"},
    {"__main__"},
]


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text())
    return found


def imports(module_name: str, tree: ast.Module) -> set[str]:
    """Absolute names imported: 'httpx', 'router.config', ..."""
    package = module_name.split(".")[:-1] if "." in module_name else []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["router", *package[: len(package) - node.level + 1]]
                if node.module:
                    names.add(".".join([*base, node.module]))
                else:
                    names |= {".".join([*base, alias.name]) for alias in node.names}
            elif node.module:
                names.add(node.module)
    return names


def test_each_third_party_library_lives_in_one_place() -> None:
    offenders = []
    for name, tree in modules().items():
        for imported in imports(name, tree):
            top = imported.split(".")[0]
            if top in ONLY_IN and name not in ONLY_IN[top]:
                offenders.append(f"{name} imports {top}")
    assert offenders == []


def test_lower_layers_never_import_higher_ones() -> None:
    layer_of = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    offenders = []
    for name, tree in modules().items():
        top = name.split(".")[0]
        if top not in layer_of:
            continue
        for imported in imports(name, tree):
            parts = imported.split(".")
            if parts[0] != "router" or len(parts) < 2 or parts[1] not in layer_of:
                continue
            if layer_of[parts[1]] > layer_of[top]:
                offenders.append(f"{name} imports {parts[1]}")
    assert offenders == []


def test_every_module_has_a_layer() -> None:
    layered = set().union(*LAYERS) | {"__init__"}
    assert sorted({name.split(".")[0] for name in modules()} - layered) == []


def test_no_provider_is_special_cased_in_code() -> None:
    offenders = []
    for name, tree in modules().items():
        if name.startswith("sim") or name == "config.providers":
            continue  # the simulators are the providers; config names the dialects it knows
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("trinity", "chenyu", "real200"):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
