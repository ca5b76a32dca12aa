"""Shared helpers: the repository's fixtures and the `svcca` command the Python results are
checked against (the one this checkout builds)."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def pytest_configure(config):
    # CI installs PyTorch: there, tests that need it must run, not be skipped.
    if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
        raise pytest.UsageError("CI is set but torch is not installed: pip install torch torchvision")


@pytest.fixture(scope="session")
def svcca_bin() -> Path:
    """`SVCCA_BIN`, else this checkout's debug build (built here if missing)."""
    if os.environ.get("SVCCA_BIN"):
        return Path(os.environ["SVCCA_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "svcca"
    if not binary.exists():
        subprocess.run(
            ["cargo", "build", "--locked", "-p", "svcca-cli"], cwd=REPO, check=True
        )
    return binary


@pytest.fixture(scope="session")
def cli(svcca_bin):
    """Runs `svcca ARGS`; returns the completed process (stdout, stderr, returncode)."""

    def run(*args, check=True):
        done = subprocess.run(
            [str(svcca_bin), *map(str, args)], capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise AssertionError(f"svcca {' '.join(map(str, args))} failed:\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def cli_json(cli):
    def run(*args):
        return json.loads(cli(*args, "--json").stdout)

    return run
