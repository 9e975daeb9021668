"""The README's "Python SDK" test example runs as written (docs are code)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokenkeep.testing import GatewayUnderTest

README = Path(__file__).resolve().parents[2] / "README.md"


def _sdk_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


async def test_readme_fixture_example_runs(tokenkeep_gateway: GatewayUnderTest) -> None:
    blocks = [b for b in _sdk_blocks() if "async def test_" in b]
    assert len(blocks) == 1, "the README's SDK section shows one test example"
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 (our own README)
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    await test(tokenkeep_gateway)


def test_readme_snippets_compile() -> None:
    """Every SDK snippet is valid Python (the others need a live gateway and real orgs)."""
    blocks = _sdk_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        compile(block, str(README), "exec")
