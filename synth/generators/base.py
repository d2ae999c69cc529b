"""What every fitted generator can do: sample tagged rows, augment a real table, be saved
and loaded.

A generator file (a ``personarl.statefile``: an ``.npz`` written atomically, read without
pickle) holds the model's arrays, the kind (``gmm`` or ``vae``), the table encoder (spec,
centre, scale), the rows it was fitted on and, for a differentially private fit, its
privacy — ε, δ, the ledger and the ledger entry that paid for it (format 2; format 1 files,
an ``.npz`` with a JSON ``meta`` entry, are refused as foreign). Everything in the file is
released: a DP generator's arrays and encoder were computed under the ledger's accounting,
so sampling from it (post-processing) costs no further privacy.

Every sampled row carries a ``source`` tag (``../shared/seeds/synthetic-training-loop-*``,
``synthetic_profiles.source``): ``generated`` for rows a generator made, ``augmented`` for
generated rows added to a real table, ``real`` for the real rows of an augmented table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from personarl.errors import ConfigError, DataError, check_int
from personarl.statefile import read_format, write_state
from synth.generators.table import TableEncoder, TableSpec, check_table

__all__ = ["Generator", "load_generator", "fitting_rows", "SOURCES", "SUFFIX", "MAX_FIT_SEED"]

SOURCES = ("generated", "augmented", "real")
#: the largest fit seed (scikit-learn's and torch's seeds are 32-bit)
MAX_FIT_SEED = 2**32 - 1
SUFFIX = ".npz"
_FORMAT = 2


class Generator:
    """A fitted generator of rows of ``encoder.spec``'s table.

    Attributes:
        kind: ``"gmm"`` or ``"vae"``.
        encoder: the table ↔ matrix map (released with the model).
        rows: the rows it was fitted on — ``None`` for a DP fit that released no count
            (the DP-GMM releases a noisy one).
        privacy: ``None`` without differential privacy; else ``{"epsilon", "delta",
            "ledger", "entry", ...}``.
    """

    kind = ""

    def __init__(self, encoder: TableEncoder, arrays: Mapping[str, np.ndarray],
                 rows: int | None,
                 privacy: Mapping[str, Any] | None = None) -> None:
        self.encoder, self.rows = encoder, None if rows is None else int(rows)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.privacy = dict(privacy) if privacy is not None else None
        self._check_arrays()

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Each array's expected shape (the kinds say)."""
        raise NotImplementedError

    def _check_arrays(self) -> None:
        """Every array the kind needs, of the shape the spec implies, finite.

        Raises:
            DataError: naming the first array missing, misshapen or not finite.
        """
        for name, shape in self._shapes().items():
            if name not in self.arrays:
                raise DataError(f"the {self.kind} generator has no {name!r} array")
            a = self.arrays[name]
            if a.shape != shape or min(shape, default=1) < 1:
                raise DataError(f"the {self.kind} generator's {name!r} has shape {a.shape}; "
                                f"its table needs {shape}")
            if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
                raise DataError(f"the {self.kind} generator's {name!r} holds values that "
                                "are not finite numbers")

    @property
    def spec(self) -> TableSpec:
        """The modelled columns (the encoder's)."""
        return self.encoder.spec

    def _draw(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator,
               source: str = "generated") -> pd.DataFrame:
        """``n`` new rows of the spec's columns plus ``source``.

        Raises:
            ConfigError: ``n`` not a non-negative integer, ``rng`` not a NumPy
                ``Generator``, or an unknown ``source``.
        """
        n = check_int("n", n, 0)
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"rng must be a numpy Generator (np.random.default_rng(seed)); "
                              f"got {rng!r}")
        if source not in SOURCES:
            raise ConfigError(f"source={source!r}; valid: {list(SOURCES)}")
        rows = self._draw(n, rng) if n else self.encoder.decode(
            np.zeros((0, self.spec.width)))
        rows["source"] = source
        return rows

    def augment(self, real: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """``real``'s rows (``source="real"``) followed by ``n`` generated ones
        (``source="augmented"``). The real rows are as they were: an augmented table is
        no more private than ``real``.

        Raises:
            DataError: ``real`` does not fit the spec (``check_table``).
        """
        rows = check_table(real, self.spec).copy()
        rows["source"] = "real"
        return pd.concat([rows, self.sample(n, rng, source="augmented")], ignore_index=True)

    def meta(self) -> dict[str, Any]:
        return {"format": _FORMAT, "kind": self.kind, "encoder": self.encoder.to_json(),
                "rows": self.rows, "privacy": self.privacy}

    def save(self, path: str | Path) -> Path:
        """Write the generator to ``path`` (``.npz`` added if missing), atomically; the
        path written.

        Raises:
            ConfigError: ``path``'s directory does not exist.
        """
        path = Path(path)
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        if not path.parent.is_dir():
            raise ConfigError(f"cannot save the generator to {str(path)!r}: the directory "
                              f"{str(path.parent)!r} does not exist")
        return write_state(path, {**self.meta(), "arrays": self.arrays})

    def __repr__(self) -> str:
        dp = (f"ε={self.privacy['epsilon']:g}" if self.privacy else "no DP")
        rows = "?" if self.rows is None else self.rows
        return f"<{type(self).__name__} {len(self.spec.columns)} columns, {rows} rows, {dp}>"


def fitting_rows(table: pd.DataFrame, private: bool) -> pd.DataFrame:
    """The rows a generator may be fitted to: the consenting users'
    (``synth.privacy.consent.consenting``: one row per user) when the table says who
    consented — a ``private`` (DP) fit requires it to.

    Raises:
        DataError: a private fit on a table without ``consent``, or a bad ``consent`` or a
            repeated ``user_id`` (``consenting``).
    """
    from synth.privacy.consent import consenting

    if isinstance(table, pd.DataFrame) and ("consent" in table.columns or private):
        return consenting(table)
    return table


def load_generator(path: str | Path) -> Generator:
    """The generator saved at ``path``.

    Raises:
        ConfigError: no such file.
        DataError: not a generator file, a damaged one, or one of another format or kind,
            or whose arrays do not fit its table (``Generator._check_arrays``).
    """
    from synth.generators.gmm import GaussianMixtureGenerator
    from synth.generators.vae import VAEGenerator

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"generator {str(path)!r} is not a file; write one with python -m "
                          "experiments.synthesize")
    state = read_format(path, _FORMAT, "generator")      # (one experiments.synthesize wrote)
    kinds = {"gmm": GaussianMixtureGenerator, "vae": VAEGenerator}
    if state.get("kind") not in kinds:
        raise DataError(f"{path} is a generator file of kind {state.get('kind')!r}; this "
                        f"version reads kinds {sorted(kinds)}")
    try:
        return kinds[state["kind"]](TableEncoder.from_json(state["encoder"]),
                                    state["arrays"], state["rows"], state.get("privacy"))
    except DataError as exc:
        raise DataError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} is not a generator file (damaged): {exc}") from None
