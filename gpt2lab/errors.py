"""The one exception type for mistakes a user can fix.

Anything raised as UserError reaches the console as a single line, `gpt2lab: error: ...`, with exit code 2
and no traceback. Its message names the problem and the fix.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
