"""Fixtures for the converter tests: the real shipped data (../shared/data) (skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA

