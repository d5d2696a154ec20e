"""The layering the README's Architecture section draws, enforced from the imports.

Every ``import`` in a module (top level or inside a function) is read from its
AST. The protocol layers import the standard library only (rtp/ and codecs/ may
also use numpy and their codec and crypto libraries), never asyncio, sockets,
threads, a logger or the clock, and never the asyncio or Pipecat layers above
them. The asyncio layers never import Pipecat, except the Pipecat glue itself.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipecat_sip"

#: Layers that do no I/O and read no clock: bytes and `now` in, events and bytes out.
PURE = ["sip", "sdp.py", "sdes.py", "rtp", "codecs"]
#: What no pure module may import, whatever its layer.
NEVER_IN_PURE = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "multiprocessing",
    "subprocess",
    "time",
    "logging",
    "loguru",
    "pipecat",
    "uvloop",
}
#: Third-party packages each pure layer may use (beyond the standard library).
THIRD_PARTY = {
    "sip": set(),
    "sdp.py": set(),
    "sdes.py": set(),
    "rtp": {"numpy", "pylibsrtp"},
    "codecs": {"numpy", "G722", "opuslib_next"},
}
#: Internal modules a pure layer may import: only other pure layers.
PURE_INTERNAL = {
    "pipecat_sip.sip",
    "pipecat_sip.sdp",
    "pipecat_sip.sdes",
    "pipecat_sip.rtp",
    "pipecat_sip.codecs",
}
#: The asyncio layers: no Pipecat (the Pipecat glue is transport.py, runner.py, echo.py, ...).
ASYNCIO_LAYER = [
    "endpoint.py",
    "media.py",
    "ports.py",
    "calls.py",
    "call.py",
    "server.py",
    "security.py",
    "host.py",
    "resolver.py",
]


def modules(layer: str) -> list[Path]:
    path = PACKAGE / layer
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imports(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (absolute, dotted)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def _layer_cases(layers: list[str]) -> list[tuple[str, Path]]:
    return [(layer, path) for layer in layers for path in modules(layer)]


@pytest.mark.parametrize(
    "layer, path", _layer_cases(PURE), ids=lambda v: str(v).split("pipecat_sip/")[-1]
)
def test_protocol_layers_import_the_stdlib_and_pure_layers_only(layer: str, path: Path):
    bad = []
    for name in imports(path):
        top = name.split(".")[0]
        if name == "__future__":
            continue
        if top == "pipecat_sip":
            if not any(name == p or name.startswith(p + ".") for p in PURE_INTERNAL):
                bad.append(f"{name} (not a protocol layer)")
        elif top in NEVER_IN_PURE:
            bad.append(f"{name} (I/O, clock or logging)")
        elif top not in sys.stdlib_module_names and top not in THIRD_PARTY[layer]:
            bad.append(f"{name} (third-party, not allowed in {layer})")
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "layer, path", _layer_cases(ASYNCIO_LAYER), ids=lambda v: str(v).split("pipecat_sip/")[-1]
)
def test_asyncio_layers_do_not_import_pipecat(layer: str, path: Path):
    bad = [n for n in imports(path) if n.split(".")[0] == "pipecat" or n == "pipecat_sip.transport"]
    assert not bad, f"{path.name} imports {bad}"


def test_every_module_is_in_a_layer():
    """A new module must be placed in the picture (and so in this test)."""
    known = {p for layer in PURE + ASYNCIO_LAYER for p in modules(layer)}
    glue = {
        "__init__.py",
        "__main__.py",
        "transport.py",
        "runner.py",
        "echo.py",
        "caller.py",
        "trunk.py",
        "routes.py",
        "stun.py",
        "tls.py",
        "api.py",
        "metrics.py",
        "logs.py",
        "recording.py",
    }
    stray = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p not in known and p.name not in glue
    ]
    assert not stray, f"modules in no layer: {stray}"
