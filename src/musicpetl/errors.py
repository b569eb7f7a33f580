"""The project's own error classes: what a user can act on. The stages and the CLI turn these into
one line naming the file or key and what is wrong; anything else is a bug and keeps its traceback.
Each also subclasses the builtin it refines, so callers that catch ValueError etc. still work."""
from __future__ import annotations


class MusicPetlError(Exception):
    """Base of every error the user can act on."""


class InputError(MusicPetlError, ValueError):
    """A bad param, label, file content or argument."""


class MissingFileError(MusicPetlError, FileNotFoundError):
    """A file the step needs is not there (usually: an earlier stage has not run)."""


class EnvironmentProblem(MusicPetlError, RuntimeError):
    """The machine lacks what was asked for (a CUDA device, a decoder)."""
