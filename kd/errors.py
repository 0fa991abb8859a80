"""Errors caused by what a user gave us (paths, files, options).

They carry a message that names the problem and the fix, so the CLI can print it
without a traceback. Bugs in our own code stay ordinary exceptions.
"""


class UserInputError(ValueError):
    """Something the user supplied is wrong; the message says what and how to fix it."""


class DatasetError(UserInputError):
    """A dataset on disk is missing, incomplete or malformed."""
