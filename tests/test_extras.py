"""A planning install has no torch: simulate and sbatch work, profile and validate say in one
line which extra to install (exit 2). torch is an extra, not a dependency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "results" / "reference" / "simulate_default" / "plan.json"

# Runs nasalloc in a process where `import torch` fails as it does where torch is not installed.
WITHOUT_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'", name="torch")
            return None

    sys.meta_path.insert(0, NoTorch())
    from nasalloc.cli import main
    main(sys.argv[1:])
""")


def _without_torch(*args, cwd):
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ["profile", "--gpus", "1", "--device", "cpu", "--out", "p.json"],
    ["validate", "--plan", str(PLAN), "--out", "v"],
])
def test_profile_and_validate_without_torch_name_the_extra(tmp_path, args):
    result = _without_torch(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"nasalloc {args[0]}" in lines[0] and "pip install 'nasalloc[train]'" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_planning_works_without_torch(tmp_path):
    result = _without_torch("simulate", "--budget", "4", "--seeds", "1", "--max-epochs", "9", "--jobs", "1",
                            "--quiet", "--out", "sim", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "sim" / "plan.json").is_file()
    result = _without_torch("sbatch", "--plan", tmp_path / "sim" / "plan.json", "--out", "v", cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "v" / "validate.sbatch").is_file(), result.stderr[-2000:]


def test_torch_is_the_train_extra_not_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])


def test_ci_runs_exactly_the_readme_test_command():
    import re

    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m pip install[^\n]*pytest[^\n]*)\n```", readme)
    assert len(commands) == 1 and "[train,test]" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[0]
