"""The one exception type for a user's mistake.

Anything raised as :class:`UserError` reaches the CLI as a one-line message and exit status 2;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a value, a file, a flag. The message names the value."""


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)
