"""The core never needs the app: headless modules import without Textual (so `desk sync` and
the CLI never pay for it, and the core stays usable from any front end)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADLESS = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in ("desk", "connectors")
    for path in (ROOT / package).rglob("*.py")
    if "tui" not in path.parts and path.name != "__init__.py"
)


@pytest.mark.parametrize("module", HEADLESS)
def test_headless_module_does_not_import_textual(module: str) -> None:
    code = f"import sys, {module}; print('textual' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"{module} pulls in Textual"
