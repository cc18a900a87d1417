"""Fixtures every test folder shares."""

import pytest


@pytest.fixture()
def nasalloc_cli(capsys):
    """Run the CLI in-process: ``nasalloc_cli([...])`` -> (exit status, stdout, stderr)."""
    from nasalloc.cli import main

    def run(args):
        try:
            main([str(a) for a in args])
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run
