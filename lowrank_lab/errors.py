"""The errors that mean "bad input": the CLI shows their one-line message and exits with 2."""

from .config import SpecError
from .data import DataError
from .models import ModelError
from .runs import RunError

USER_ERRORS = (SpecError, DataError, ModelError, RunError)
