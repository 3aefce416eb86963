"""The errors that mean "bad input": the CLI shows their one-line message and exits with 2.

Each is defined in the home that detects it (spec, data files, models, result files). Checking
an error against them imports nothing: an error can only come from a module already imported, and
importing the others (the model loader imports torch) would cost seconds before a one-line message.
"""

from __future__ import annotations

import sys

# (module, class) of every user error
HOMES = (("lowrank_lab.spec.sections", "SpecError"), ("lowrank_lab.store.datasets", "DataError"),
         ("lowrank_lab.model.base", "ModelError"), ("lowrank_lab.store.files", "RunError"))


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is one of the user errors (looking only at the homes already imported)."""
    return any(isinstance(err, getattr(sys.modules[module], name)) for module, name in HOMES if module in sys.modules)
