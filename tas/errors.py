"""The one exception type users see.

Every error that a user can fix (bad params, missing data, corrupt checkpoint, ...) is raised as
`TasError` with a single line saying what is wrong and how to fix it; the CLI prints that line and
exits with code 2. Anything else escaping is a bug and keeps its traceback.
"""


class TasError(Exception):
    """A user-fixable problem; `str(err)` is the one line to show."""

    exit_code = 2
