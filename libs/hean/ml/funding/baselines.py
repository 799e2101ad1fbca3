"""The forecasts a model must beat: persistence ("next = current") and an EWMA of past rates."""

from __future__ import annotations

import numpy as np
import pandas as pd


def persistence_bps8(df: pd.DataFrame, ends: np.ndarray) -> np.ndarray:
    return df["rate_bps8"].to_numpy()[ends]


def ewma_bps8(df: pd.DataFrame, ends: np.ndarray) -> np.ndarray:
    return df["ewma_bps8"].to_numpy()[ends]
