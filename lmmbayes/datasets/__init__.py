"""Data sets shipped inside the package (no download at run time).

- `load_bounce_times`: simulated website bounce times, 613 rows, 8
  counties (MIT licence, Copyright (c) 2020 Eduardo Coronado; see
  ``data/LICENSE.bounce_rates_sim``).
- `load_radon`: Minnesota household radon, 919 rows, 85 counties
  (BSD 3-Clause, Stan Developers; see ``data/LICENSE.radon_mn``).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["license_text", "load_bounce_times", "load_radon"]

#: Mean and sample SD (ddof=1) of ``age`` in the bounce data, as R's scale() uses.
BOUNCE_AGE_MEAN = 49.00979
BOUNCE_AGE_SD = 22.46217


def _read(name: str, label: str) -> pd.DataFrame:
    """A bundled CSV as a new frame named ``label`` (``attrs["name"]``: the summary's ``Data:`` line)."""
    with resources.files(__name__).joinpath("data", name).open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh)
    df.attrs["name"] = label
    return df


def load_bounce_times() -> pd.DataFrame:
    """Website bounce times by county, with ``std_age`` as R's ``scale(age)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``bounce_time`` (seconds), ``age`` (years, uncleaned),
        ``county`` (8 levels) and ``std_age = (age - mean) / sd`` with the
        sample SD (ddof = 1). Named ``"bounce_times"`` (``attrs["name"]``),
        which the fit's summary prints as its data.
    """
    df = _read("bounce_rates_sim.csv", "bounce_times")
    df["std_age"] = (df["age"] - df["age"].mean()) / df["age"].std(ddof=1)
    return df


def load_radon() -> pd.DataFrame:
    """Minnesota radon: ``log_radon``, ``floor`` (0/1), ``log_uppm``, ``county``; named ``"radon"``."""
    return _read("radon_mn.csv", "radon")


def license_text(dataset: str) -> str:
    """The licence notice shipped with ``dataset`` ("bounce_rates_sim" or "radon_mn")."""
    path = resources.files(__name__).joinpath("data", f"LICENSE.{dataset}")
    return path.read_text(encoding="utf-8")
