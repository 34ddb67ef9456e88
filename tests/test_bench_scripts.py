"""Every benchmark script still imports: they share helpers with bench/inbound.py, and a
rename there once broke bench/console.py without any test noticing."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_script_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert Path(module.__file__ or "").name == f"{name}.py"
