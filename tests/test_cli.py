"""The top-level CLI: what --help lists, --version, one-line errors with exit status 2."""

import subprocess
import sys

import pytest

import nasalloc
from nasalloc.cli import SUBCOMMANDS


def run(*args):
    return subprocess.run([sys.executable, "-m", "nasalloc", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    result = run("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].strip().splitlines()]
    assert listed == ["profile", "simulate", "validate", "sbatch", "import", "export"]


def test_version():
    result = run("--version")
    assert result.returncode == 0 and nasalloc.__version__ in result.stdout


@pytest.mark.parametrize("args", [["nope"], ["--bogus"], ["simulate", "--budget", "abc"], ["simulate"]])
def test_usage_mistakes_are_one_line_and_exit_2(args):
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_module_imports_on_its_own(name):
    # A subcommand module imported first (before nasalloc.cli) must not hit a circular import.
    module, attribute = SUBCOMMANDS[name]
    code = f"import {module} as m; assert callable(getattr(m, {attribute!r}))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0
