"""Package data: the shipped digits learning-curve benchmark and the default profile."""

from importlib import resources


def data_path(name: str):
    """A path-like object to a file shipped in nasalloc.data (works from an installed wheel)."""
    return resources.files(__name__).joinpath(name)
