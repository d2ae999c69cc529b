"""Keyed hashing of identifiers: what a user id or an episode id becomes before anything
that holds it is written.

    >>> from personarl.identifiers import Pseudonymiser
    >>> pseudonymise = Pseudonymiser.from_env()         # the key in $PERSONARL_PII_KEY
    >>> pseudonymise("alice@example.com")                # 64 hex digits, the same every time
    'hmac-sha256:…'

A pseudonym is ``HMAC-SHA256(key, UTF-8 bytes of the identifier)`` (RFC 2104, with SHA-256
from FIPS 180-4) in hex, prefixed ``hmac-sha256:`` so that a reader can tell a pseudonym
from a raw id. The same key gives the same pseudonym, so rows of one user still join (and
a sticky traffic split stays sticky across restarts); without the key a pseudonym cannot be
reversed or recomputed from a guessed id — which an unkeyed hash allows for any id that can
be enumerated, such as an e-mail address. Keep the key out of the logs' directory; whoever
holds it can test guesses. Rotating the key unlinks old rows from new ones.

Standard library only: serving imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Optional

from personarl.errors import ConfigError

__all__ = ["Pseudonymiser", "PII_KEY_VARIABLE", "MIN_KEY_BYTES", "PREFIX"]

#: the environment variable that holds the key
PII_KEY_VARIABLE = "PERSONARL_PII_KEY"
#: RFC 2104 §3: a key shorter than the hash's output (32 bytes) weakens the MAC
MIN_KEY_BYTES = 32
PREFIX = "hmac-sha256:"


class Pseudonymiser:
    """``HMAC-SHA256`` of identifiers under one secret key.

    Args:
        key: the secret, at least ``MIN_KEY_BYTES`` bytes (a ``str`` is taken as UTF-8).

    Raises:
        ConfigError: a key that is not bytes/str or is shorter than ``MIN_KEY_BYTES``.
    """

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8", "surrogatepass")
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            size = len(key) if isinstance(key, bytes) else type(key).__name__
            raise ConfigError(f"the identifier-hashing key has {size} bytes; it needs at least "
                              f"{MIN_KEY_BYTES} (e.g. {PII_KEY_VARIABLE}=$(openssl rand -hex "
                              "32))")
        self._key = key

    @classmethod
    def from_env(cls, variable: str = PII_KEY_VARIABLE) -> "Pseudonymiser":
        """The pseudonymiser keyed by ``$variable``.

        Raises:
            ConfigError: the variable is unset or empty (naming it), or its key is too short.
        """
        key = os.environ.get(variable)
        if not key:
            raise ConfigError(f"{variable} is not set: identifiers are keyed-hashed before "
                              f"they are written and need a secret key (e.g. export "
                              f"{variable}=$(openssl rand -hex 32))")
        return cls(key)

    @classmethod
    def ephemeral(cls) -> "Pseudonymiser":
        """A pseudonymiser with a random key that lives only as long as this object: the
        same id maps to the same value within a process, and to an unrelated one after a
        restart."""
        return cls(os.urandom(MIN_KEY_BYTES))

    def __call__(self, identifier: Optional[str]) -> Optional[str]:
        """The pseudonym of ``identifier`` (``None`` stays ``None``).

        Raises:
            ConfigError: ``identifier`` is not a string.
        """
        if identifier is None:
            return None
        if not isinstance(identifier, str):
            raise ConfigError(f"an identifier must be a string, got {type(identifier).__name__}")
        data = identifier.encode("utf-8", "surrogatepass")
        return PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def digest(self, identifier: str) -> bytes:
        """The raw 32-byte MAC of ``identifier`` (for deriving numbers, such as a traffic
        bucket, from it)."""
        return hmac.new(self._key, identifier.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def __repr__(self) -> str:                       # never shows the key
        return "Pseudonymiser(key=<hidden>)"
