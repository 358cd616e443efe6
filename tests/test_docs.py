"""The docs the repository owns stay true to the code."""

import re
from pathlib import Path

from ragtune.settings import TABLE_END, TABLE_START, Settings, settings_table

REPO = Path(__file__).resolve().parent.parent


def test_the_configuration_table_is_generated_from_the_settings():
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = re.search(re.escape(TABLE_START) + r"\n(.*?)\n" + re.escape(TABLE_END), text, re.S)
    assert block, "docs/operations.md lost its settings table markers"
    assert block.group(1) == settings_table(), "stale: run `python -m ragtune.settings --write docs/operations.md`"
    assert all(field.description for field in Settings.model_fields.values())  # every setting explains itself


def test_the_layout_in_the_design_doc_matches_the_tree():
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    packages = [
        "ragtune",
        "ragtune/knowledge",
        "ragtune/behaviour",
        "ragtune/llm",
        "ragtune/serving",
        "ragtune/cli",
        "training",
        "evaluation",
        "assets",
        "pipelines",
    ]
    modules = {str(p.relative_to(REPO)) for pkg in packages for p in (REPO / pkg).glob("*.py") if p.name != "__init__.py"}
    named = set(re.findall(r"[\w/]+\.py", design))
    missing = sorted(m for m in modules if m not in named and m.rsplit("/", 1)[-1] not in named)
    assert not missing, f"docs/design.md does not place: {', '.join(missing)}"
    gone = sorted(n for n in named if "/" in n and not (REPO / n).exists())
    assert not gone, f"docs/design.md names files that do not exist: {', '.join(gone)}"
