"""The one error type users see: a single line that names the key or file and what is wrong."""


class XtflowError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""
