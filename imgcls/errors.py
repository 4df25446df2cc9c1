"""The one exception type that reaches the user as a single clear line."""


class ImgclsError(Exception):
    """A problem the user can fix: the message names the culprit and what to do.

    The CLI prints it as one line without a traceback and exits with status 2.
    """
