"""Errors caused by what a user gave us (paths, files, options).

They carry a message that names the problem and the fix, so the CLI can print it
without a traceback. Bugs in our own code stay ordinary exceptions.
"""


class UserInputError(ValueError):
    """Something the user supplied is wrong; the message says what and how to fix it."""


class DatasetError(UserInputError):
    """A dataset on disk is missing, incomplete or malformed."""


class NonFiniteLossError(FloatingPointError):
    """A loss term came out NaN or infinite during training (the run diverged).

    Not a UserInputError: the inputs were valid, the optimisation blew up. Carries the term's
    name, its value and where it happened, so a study can record why a trial failed.
    """

    def __init__(self, term: str, value: float, where: str = ""):
        self.term, self.value, self.where = term, value, where
        at = f" at {where}" if where else ""
        super().__init__(
            f"loss term {term!r} is {value}{at}: training diverged. "
            f"Lower the learning rate or the weight of {term!r}."
        )

    def __reduce__(self):
        # Ray sends exceptions between processes; the default pickling would call __init__(message).
        return type(self), (self.term, self.value, self.where)
