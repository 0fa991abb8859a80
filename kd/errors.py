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


class StorageError(OSError):
    """A file could not be written (disk full, quota, a folder gone or read-only): a fault of the
    machine the study runs on, not of the trial that was writing. The study stops, keeping what it
    wrote, and --resume runs the interrupted trials again once there is space.

    Its class name is how a study's driver recognises it in the error text Ray hands back.
    """

    def __init__(self, path: str, cause: str, code: int | None = None, advice: str = ""):
        self.path, self.cause, self.advice = str(path), cause, advice
        super().__init__(code, f"could not write {path} ({cause})" + (f"; {advice}" if advice else ""))

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):
        return type(self), (self.path, self.cause, self.errno, self.advice)
