"""Every module sits in a layer of the import contract (pyproject.toml), so a new one cannot slip past it.

import-linter checks only the modules its layers name: a new module directly under ragtune/ or a new
top-level package would belong to no layer, and its imports would go unchecked.
"""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_module_belongs_to_a_layer():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    members = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for package in config["root_packages"]
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py" and "configs" not in path.parts
    }
    outside = sorted(m for m in modules if not any(m == x or m.startswith(x + ".") for x in members))
    assert not outside, f"modules in no layer of pyproject.toml's import contract: {', '.join(outside)}"
    assert len(modules) > 50  # the walk found the code
