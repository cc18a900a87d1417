"""House rule: planning works without torch. A whole `nasalloc simulate` must not import it."""

import subprocess
import sys
import textwrap


def test_simulate_runs_without_importing_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from nasalloc.cli import main
        try:
            main(["simulate", "--budget", "4", "--seeds", "1", "--algorithms", "hyperband,asha,bohb",
                  "--max-epochs", "9", "--jobs", "1", "--quiet", "--out", {str(tmp_path / "sim")!r}])
        except SystemExit as stop:
            assert not stop.code, stop.code
        assert "torch" not in sys.modules, "the simulator imported torch"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "sim" / "plan.json").is_file()
