"""Quasi-identifiers of simulated users — an age band and a city — and the generalisation
hierarchies k-anonymity climbs.

A quasi-identifier is an attribute that is not an identifier but, joined with others, can
single a person out (Sweeney 2002: ZIP code, birth date and sex identify most Americans).
Every simulated user has three: the demographic ``group`` of ``synth.population``, an age
band and a city. They are drawn independently of the persona — a policy gains nothing from
them — and exist so that privacy work has something realistic to protect.

**Age band** (``AGE_BANDS``, shares ``AGE_SHARES``): adult users in ten-year bands, shares
chosen to resemble the age structure of adult internet users (more 25–44, fewer 65+). They
are this simulator's choice, not measured data.

**City** (``CITIES``): an invented geography of 3 countries, 9 regions and 27 cities.
Countries have shares 0.6 / 0.3 / 0.1; within a country, regions, and within a region,
cities, have shares proportional to ``1 / rank`` — city sizes follow Zipf's law roughly
(Zipf 1949; Gabaix 1999). So a city's share is the product of the three.

**Hierarchies** (``Hierarchy``): each quasi-identifier generalises level by level to ``*``
(suppressed): age band → a wider group (18–34, 35–54, 55+) → ``*``; city → region → country
→ ``*``; group → ``*``. ``hierarchies(group_names)`` builds the three.

NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from personarl.errors import ConfigError, check_int

__all__ = ["AGE_BANDS", "AGE_SHARES", "AGE_GROUPS", "COUNTRIES", "REGIONS", "CITIES",
           "CITY_SHARES", "CITY_REGION", "REGION_COUNTRY", "PROFILE_CDF", "PROFILE_GUIDE",
           "Hierarchy",
           "hierarchies", "SUPPRESSED"]

#: the label of a value generalised away entirely
SUPPRESSED = "*"

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARES = np.array([0.14, 0.22, 0.20, 0.17, 0.14, 0.13])
#: the wider group of each age band
AGE_GROUPS = ("18-34", "18-34", "35-54", "35-54", "55+", "55+")

_GEOGRAPHY: Mapping[str, tuple[float, Sequence[str]]] = {
    "Avaria": (0.6, ("North Avaria", "South Avaria", "East Avaria", "West Avaria")),
    "Brennland": (0.3, ("Upper Brenn", "Lower Brenn", "Brenn Coast")),
    "Caldor": (0.1, ("Caldor Highlands", "Caldor Valley")),
}
_CITIES_PER_REGION = 3


def _zipf(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


def _geography() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], np.ndarray,
                          np.ndarray, np.ndarray]:
    countries, regions, cities, shares, city_region, region_country = [], [], [], [], [], []
    for c, (country, (share, names)) in enumerate(_GEOGRAPHY.items()):
        countries.append(country)
        for region, region_share in zip(names, _zipf(len(names))):
            region_country.append(c)
            for i, city_share in enumerate(_zipf(_CITIES_PER_REGION)):
                cities.append(f"{region} {i + 1}")
                city_region.append(len(regions))
                shares.append(share * region_share * city_share)
            regions.append(region)
    return (tuple(countries), tuple(regions), tuple(cities), np.array(shares),
            np.array(city_region), np.array(region_country))


COUNTRIES, REGIONS, CITIES, CITY_SHARES, CITY_REGION, REGION_COUNTRY = _geography()
#: the cumulative shares of the (age band, city) pairs, age band major: the two are
#: independent, so ``synth.population`` draws both with one uniform (cell ``c`` is age band
#: ``c // len(CITIES)``, city ``c % len(CITIES)``)
PROFILE_CDF = np.cumsum(np.outer(AGE_SHARES, CITY_SHARES).ravel())
#: ``PROFILE_GUIDE[b]``: the first cell whose cumulative share exceeds ``b / 1024`` of the
#: total — where a draw ``u`` in ``[b / 1024, (b + 1) / 1024)`` starts its search (a guide
#: table, Chen & Asau 1974: the inverse CDF in a step or two instead of a binary search)
PROFILE_GUIDE = np.searchsorted(PROFILE_CDF, np.arange(1024) / 1024 * PROFILE_CDF[-1],
                                side="right")


@dataclass(frozen=True)
class Hierarchy:
    """How one quasi-identifier generalises.

    Attributes:
        column: the quasi-identifier's column.
        levels: the name of each level, finest first (the last is always ``*``).
        labels: ``labels[l][v]`` is the label at level ``l`` of finest value ``v`` (an
            index into ``labels[0]``).
    """

    column: str
    levels: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]

    @property
    def height(self) -> int:
        """The top level's index (everything suppressed)."""
        return len(self.levels) - 1

    def codes(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(n,)`` int64: each value's index into the finest labels ``labels[0]`` (one
        dictionary lookup per distinct value, not per row).

        Raises:
            ConfigError: a value that is not a finest label (naming it and the valid ones).
        """
        distinct, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        index = {label: i for i, label in enumerate(self.labels[0])}
        unknown = [v for v in distinct.tolist() if v not in index]
        if unknown:
            raise ConfigError(f"column {self.column!r} holds {unknown[0]!r}; valid: "
                              f"{list(self.labels[0])}")
        return np.array([index[v] for v in distinct.tolist()], dtype=np.int64)[
            inverse.reshape(-1)]

    def level_codes(self, level: int) -> np.ndarray:
        """``(len(labels[0]),)``: a code per finest value that is equal exactly when their
        labels at ``level`` are (``level_codes(l)[codes(values)]`` groups rows at ``l``).

        Raises:
            ConfigError: ``level`` outside ``0..height``.
        """
        level = check_int(f"{self.column} level", level, 0, self.height)
        return np.unique(np.asarray(self.labels[level], dtype=str), return_inverse=True)[1]

    def generalise(self, values: Sequence[str] | np.ndarray, level: int) -> np.ndarray:
        """``values`` (finest labels) at ``level``, as an object array of labels.

        Raises:
            ConfigError: ``level`` outside ``0..height`` or a value that is not a finest
                label (naming it and the valid ones).
        """
        level = check_int(f"{self.column} level", level, 0, self.height)
        return np.asarray(self.labels[level], dtype=object)[self.codes(values)]


def _with_top(column: str, levels: Sequence[str], labels: Sequence[Sequence[str]]) -> Hierarchy:
    n = len(labels[0])
    return Hierarchy(column, (*levels, SUPPRESSED),
                     (*(tuple(str(x) for x in level) for level in labels), (SUPPRESSED,) * n))


def hierarchies(group_names: Sequence[str]) -> dict[str, Hierarchy]:
    """The hierarchies of the three quasi-identifiers, by column: ``age_band``, ``city``
    and ``group`` (whose finest labels are the population's ``group_names``)."""
    return {
        "age_band": _with_top("age_band", ("age_band", "age_group"), (AGE_BANDS, AGE_GROUPS)),
        "city": _with_top("city", ("city", "region", "country"), (
            CITIES, tuple(REGIONS[r] for r in CITY_REGION),
            tuple(COUNTRIES[REGION_COUNTRY[r]] for r in CITY_REGION))),
        "group": _with_top("group", ("group",), (tuple(group_names),)),
    }

