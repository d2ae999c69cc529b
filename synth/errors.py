"""The typed errors of PersonaRL, kept importable from here; they live in
``personarl.errors`` (the ground floor, so that serving and the registry can raise them)."""

from personarl.errors import (ConfigError, DataError, InvalidActionError,  # noqa: F401
                              PersonaRLError, ResetNeededError, check_flag, check_int,
                              check_range)
from personarl.errors import __all__  # noqa: F401
