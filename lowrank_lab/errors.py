"""The errors that mean "bad input": the CLI shows their one-line message and exits with 2."""

from lowrank_lab.spec import SpecError
from lowrank_lab.train.data import DataError
from lowrank_lab.model.base import ModelError
from lowrank_lab.store.files import RunError

USER_ERRORS = (SpecError, DataError, ModelError, RunError)
