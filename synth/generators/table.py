"""The tables generators are fitted to, and how a table becomes the matrix a model sees.

A ``TableSpec`` names every column a generator models and what it holds:

* ``continuous`` — a real number with *public bounds* ``(low, high)``: bounds anyone may
  know without seeing the data (a share lies in [0, 1]), never the data's own minimum and
  maximum. Differentially private fits clip to them (that is what bounds one user's
  influence) and every generator's output is clipped to them.
* ``weight`` — one entry of the table's simplex (a user's archetype mixture): the
  ``weight`` columns of a row are non-negative and sum to 1. Each is modelled as
  ``log(w + WEIGHT_FLOOR)`` (bounds ``[log WEIGHT_FLOOR, log(1 + WEIGHT_FLOOR)]``) and
  decoded as ``max(exp(z) − WEIGHT_FLOOR, 0)``, the row renormalised — a log-ratio
  transform with a pseudo-count (Aitchison 1986), so that models with Gaussian noise never
  produce a negative weight.
* ``categorical`` — one of a fixed, public list of ``categories`` (strings).

``TableEncoder`` turns a checked table into the ``(n, D)`` float matrix the models see —
each continuous (and transformed weight) column centred and scaled, each categorical column
one-hot — and a model's ``(n, D)`` output back into a table: continuous values unscaled and
clipped to their bounds, weights renormalised, each categorical block to the category with
the largest entry (``decode``) or drawn from per-block logits (``decode`` with
``logits=True``). The centre and scale are either the data's mean and standard deviation
(``TableEncoder.fit``) or values released with differential privacy (``dp_gmm``): the
encoder itself is part of what a generator releases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from personarl.errors import ConfigError, DataError

__all__ = ["Column", "TableSpec", "TableEncoder", "check_table", "WEIGHT_FLOOR", "KINDS"]

#: the pseudo-count of the weight columns' log transform
WEIGHT_FLOOR = 0.01
KINDS = ("continuous", "weight", "categorical")


@dataclass(frozen=True)
class Column:
    """One modelled column (module doc).

    Raises:
        ConfigError: an unknown ``kind``, continuous bounds that are not finite with
            ``low < high``, or a categorical column with fewer than two distinct categories.
    """

    name: str
    kind: str
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"column {self.name!r}: kind={self.kind!r}; valid: {list(KINDS)}")
        if self.kind == "weight":
            object.__setattr__(self, "bounds", (float(np.log(WEIGHT_FLOOR)),
                                                float(np.log1p(WEIGHT_FLOOR))))
        elif self.kind == "continuous":
            try:
                low, high = (float(b) for b in self.bounds)        # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise ConfigError(f"continuous column {self.name!r} needs public bounds "
                                  f"(low, high); got {self.bounds!r}") from None
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ConfigError(f"column {self.name!r}: bounds {self.bounds!r} must be "
                                  "finite with low < high")
            object.__setattr__(self, "bounds", (low, high))
        else:
            if isinstance(self.categories, (str, bytes)) or not isinstance(
                    self.categories, (list, tuple)):
                raise ConfigError(f"categorical column {self.name!r}: categories must be a "
                                  f"list of strings; got {self.categories!r}")
            cats = tuple(str(c) for c in self.categories)
            if len(set(cats)) < 2 or len(set(cats)) != len(cats):
                raise ConfigError(f"categorical column {self.name!r} needs at least two "
                                  f"distinct categories; got {list(self.categories)}")
            object.__setattr__(self, "categories", cats)

    @property
    def width(self) -> int:
        """Entries of the encoded matrix this column takes."""
        return len(self.categories) if self.kind == "categorical" else 1

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                **({"bounds": list(self.bounds)} if self.kind == "continuous" else {}),
                **({"categories": list(self.categories)} if self.categories else {})}


@dataclass(frozen=True)
class TableSpec:
    """The columns a generator models, in order (module doc).

    Raises:
        ConfigError: no columns, a repeated name, or a single ``weight`` column (a simplex
            needs two).
    """

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if isinstance(self.columns, (str, bytes, Mapping)) or not isinstance(
                self.columns, (list, tuple)):
            raise ConfigError(f"a table spec's columns are a list of Column (or mappings of "
                              f"its fields); got {self.columns!r}")
        bad = [c for c in self.columns if not isinstance(c, (Column, Mapping))]
        if bad:
            raise ConfigError(f"a table spec's columns are Column objects or mappings of their "
                              f"fields (name, kind, bounds, categories); got {bad[0]!r}")
        try:
            cols = tuple(c if isinstance(c, Column) else Column(**c) for c in self.columns)
        except TypeError as exc:
            raise ConfigError(f"a column mapping: {exc}; its fields are name, kind, bounds, "
                              "categories") from None
        object.__setattr__(self, "columns", cols)
        names = [c.name for c in cols]
        if not cols:
            raise ConfigError("a table spec needs at least one column")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"columns {repeated} appear more than once in the table spec")
        if len(self.weights) == 1:
            raise ConfigError(f"weight column {self.weights[0]!r} is alone; the weight "
                              "columns form a simplex and need at least two")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def weights(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "weight"]

    @property
    def numeric(self) -> list[Column]:
        """The continuous and weight columns, in order."""
        return [c for c in self.columns if c.kind != "categorical"]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def width(self) -> int:
        """``D``, the encoded matrix's columns: the numeric ones, then each categorical
        column's one-hot block."""
        return sum(c.width for c in self.columns)

    def blocks(self) -> list[tuple[Column, slice]]:
        """Each categorical column's slice of the encoded matrix."""
        out, start = [], len(self.numeric)
        for c in self.categorical:
            out.append((c, slice(start, start + c.width)))
            start += c.width
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.columns]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> "TableSpec":
        return cls(tuple(Column(name=d["name"], kind=d["kind"],
                                bounds=tuple(d["bounds"]) if "bounds" in d else None,
                                categories=tuple(d.get("categories", ())))
                         for d in data))


def check_table(table: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """``table``'s ``spec`` columns, checked; other columns are ignored.

    Raises:
        ConfigError: ``spec`` is not a ``TableSpec``.
        DataError: not a DataFrame, no rows, a missing column, a numeric column holding
            something that is not a finite number (naming the column, the row and the value),
            a weight row that is not on the simplex, or a categorical value outside the
            column's categories (naming it and the valid ones).
    """
    if not isinstance(spec, TableSpec):
        raise ConfigError(f"spec must be a TableSpec (e.g. synth.generators.behaviour."
                          f"behaviour_spec()); got {spec!r}")
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"a generator is fitted to a pandas DataFrame; got "
                        f"{type(table).__name__}")
    if len(table) == 0:
        raise DataError("the table is empty: a generator needs at least one row to fit")
    missing = [n for n in spec.names if n not in table.columns]
    if missing:
        raise DataError(f"the table has no column(s) {missing}; the spec models "
                        f"{spec.names}")
    for c in spec.numeric:
        col = table[c.name]
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            first = col.iloc[0]
            raise DataError(f"column {c.name!r} is {c.kind} but holds {col.dtype} values "
                            f"(first: {first!r}); it needs finite numbers")
        values = col.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"column {c.name!r} row {int(bad[0])} is {float(values[bad[0]])}; "
                            "every value must be a finite number")
    if spec.weights:
        w = table[spec.weights].to_numpy(dtype=np.float64)
        off = np.flatnonzero((w < 0).any(axis=1) | ~np.isclose(w.sum(axis=1), 1.0, atol=1e-6))
        if off.size:
            raise DataError(f"weight columns {spec.weights} of row {int(off[0])} are "
                            f"{w[off[0]].round(6).tolist()}; each row must be non-negative "
                            "and sum to 1")
    for c in spec.categorical:
        values = table[c.name].astype(str)
        bad = ~values.isin(c.categories)
        if bad.any():
            raise DataError(f"column {c.name!r} holds {values[bad].iloc[0]!r}; valid "
                            f"categories: {list(c.categories)}")
    return table[spec.names]


@dataclass
class TableEncoder:
    """A table ↔ matrix map for one ``TableSpec`` (module doc).

    Attributes:
        spec: the columns.
        centre, scale: ``(numeric columns,)`` what each numeric (transformed) column is
            centred on and divided by.
    """

    spec: TableSpec
    centre: np.ndarray
    scale: np.ndarray
    _codes: list[dict[str, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.centre = np.asarray(self.centre, dtype=np.float64)
        self.scale = np.asarray(self.scale, dtype=np.float64)
        self._codes = [{k: i for i, k in enumerate(c.categories)}
                       for c in self.spec.categorical]

    @classmethod
    def fit(cls, spec: TableSpec, table: pd.DataFrame) -> "TableEncoder":
        """Centre and scale from the (checked) table's mean and standard deviation; a
        constant column keeps scale 1."""
        x = cls.numeric_values(spec, check_table(table, spec))
        sd = x.std(axis=0) if len(x) > 1 else np.ones(x.shape[1])
        return cls(spec, x.mean(axis=0), np.where(sd > 1e-12, sd, 1.0))

    @staticmethod
    def numeric_values(spec: TableSpec, table: pd.DataFrame) -> np.ndarray:
        """``(n, numeric columns)``: continuous values, and weights as ``log(w + floor)``,
        clipped to their public bounds."""
        cols = []
        for c in spec.numeric:
            v = table[c.name].to_numpy(dtype=np.float64)
            cols.append(np.log(v + WEIGHT_FLOOR) if c.kind == "weight" else v)
        x = np.column_stack(cols) if cols else np.zeros((len(table), 0))
        low = np.array([c.bounds[0] for c in spec.numeric])
        high = np.array([c.bounds[1] for c in spec.numeric])
        return np.clip(x, low, high)

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """``(n, D)`` matrix of a table (checked against the spec)."""
        table = check_table(table, self.spec)
        n = len(table)
        out = np.zeros((n, self.spec.width))
        k = len(self.spec.numeric)
        out[:, :k] = (self.numeric_values(self.spec, table) - self.centre) / self.scale
        for (c, block), codes in zip(self.spec.blocks(), self._codes):
            idx = table[c.name].astype(str).map(codes).to_numpy(dtype=np.int64)
            out[np.arange(n), block.start + idx] = 1.0
        return out

    def decode(self, z: np.ndarray, rng: np.random.Generator | None = None,
               logits: bool = False) -> pd.DataFrame:
        """The table of a model's ``(n, D)`` output: numeric columns unscaled and clipped
        to their bounds, weights renormalised (a row whose weights all vanish becomes
        uniform), categorical blocks to their largest entry — or, with ``logits``, a draw
        from each block's softmax (``rng``, Gumbel-max)."""
        z = np.asarray(z, dtype=np.float64)
        out: dict[str, Any] = {}
        k = len(self.spec.numeric)
        x = z[:, :k] * self.scale + self.centre
        for j, c in enumerate(self.spec.numeric):
            out[c.name] = np.clip(x[:, j], *c.bounds)
        if self.spec.weights:
            w = np.maximum(np.exp(np.column_stack([out[n] for n in self.spec.weights]))
                           - WEIGHT_FLOOR, 0.0)
            total = w.sum(axis=1, keepdims=True)
            w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / w.shape[1])
            for j, n in enumerate(self.spec.weights):
                out[n] = w[:, j]
        for c, block in self.spec.blocks():
            scores = z[:, block]
            if logits:
                if rng is None:
                    raise ConfigError("drawing categories from logits needs an rng")
                scores = scores + rng.gumbel(size=scores.shape)
            out[c.name] = np.asarray(c.categories, dtype=object)[scores.argmax(axis=1)]
        return pd.DataFrame(out)[self.spec.names]

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "centre": self.centre.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TableEncoder":
        return cls(TableSpec.from_json(data["spec"]), np.asarray(data["centre"]),
                   np.asarray(data["scale"]))
