"""Options every subcommand shares, so their names and help stay identical.

They live apart from ``nasalloc.cli`` so a subcommand module can be imported on its own
(``import nasalloc.simulator.cli``) without importing the group that loads it.
"""

import click


def out_option(default: str):
    return click.option("--out", "out", type=click.Path(file_okay=False), default=default,
                        show_default=True, help="Folder the results are written to.")


seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Seed of every random choice (schedulers, sampling, noise).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print only errors and the final summary.")
