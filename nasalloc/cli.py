"""The ``nasalloc`` command line: profile -> simulate -> validate.

Each subcommand lives beside the code it drives (``nasalloc.simulator.cli`` and so on) and is
registered here. A user's mistake (a :class:`~nasalloc.errors.UserError` or a click usage
error) prints one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import UserError


# name -> (module, attribute); loaded on first use so `nasalloc --version` stays fast and
# importing one subcommand's module never imports the others.
SUBCOMMANDS = {
    "profile": ("nasalloc.profiler.cli", "profile"),
    "simulate": ("nasalloc.simulator.cli", "simulate"),
    "validate": ("nasalloc.validate.cli", "validate"),
    "sbatch": ("nasalloc.validate.sbatch", "sbatch"),
    "import": ("nasalloc.importcli", "import_"),
    "export": ("nasalloc.simulator.export", "export"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in SUBCOMMANDS:
            return None
        from importlib import import_module

        module, attribute = SUBCOMMANDS[name]
        return getattr(import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nasalloc")
def cli() -> None:
    """Find the best split of a GPU budget for an early-stopping NAS/HPO search.

    \b
    nasalloc profile --gpus 1,2,4,8,16   measure DDP scaling, fit a model -> profile.json
    nasalloc simulate --budget 64        replay HyperBand/ASHA/BOHB per split -> plan.json
    nasalloc validate --plan plan.json   run the best and worst splits for real -> report
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI with one-line errors and exit status 2 for user mistakes."""
    try:
        cli.main(args=argv, prog_name="nasalloc", standalone_mode=False)
    except UserError as err:
        click.echo(f"nasalloc: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("nasalloc: aborted", err=True)
        sys.exit(130)
    except click.exceptions.UsageError as err:
        message = err.format_message().replace("\n", " ")
        command = f" {err.ctx.info_name}" if err.ctx and err.ctx.parent else ""
        click.echo(f"nasalloc{command}: error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.ClickException as err:
        click.echo(f"nasalloc: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code if err.exit_code != 1 else 2)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
