"""The two cascade feature sets, daily and intraday, behind one interface.

Training, evaluation, the artifact and the live predictor pick the set named in the artifact's
``meta.json`` (``feature_set``; artifacts without it are daily) and call its functions, so a
feature is computed by one implementation everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hean.ml.cascade.features import BAR_COLUMNS, FEATURES, ClusterConfig, compute_features
from hean.ml.cascade.intraday import (
    INTRADAY_BAR_COLUMNS,
    INTRADAY_CLUSTER,
    INTRADAY_FEATURES,
    MOMENTUM_MS,
    WindowLabelRule,
    bars_back,
    compute_intraday_features,
    window_labels,
)
from hean.ml.cascade.labels import LabelRule, next_bar_labels
from hean.ml.cascade.tiers import LeverageBucket

DAY_MS = 86_400_000


@dataclass(frozen=True)
class FeatureSet:
    name: str
    features: tuple[str, ...]
    columns: tuple[str, ...]
    """Bar columns the features need."""
    cluster: ClusterConfig
    rule_type: type
    vol_window_ms: int | None
    """Trailing window of the volatility baseline (None: seven bars, the daily set's own)."""
    _compute: Callable[..., pd.DataFrame]
    _labels: Callable[..., pd.Series]

    def compute(
        self,
        bars: pd.DataFrame,
        bar_ms: int,
        bks: Sequence[LeverageBucket] | None,
        cluster: ClusterConfig | None,
    ) -> pd.DataFrame:
        return self._compute(bars, bar_ms, bks, cluster or self.cluster)

    def labels(self, bars: pd.DataFrame, bar_ms: int, rule: Any) -> pd.Series:
        return self._labels(bars, bar_ms, rule)

    def default_rule(self) -> Any:
        return self.rule_type()

    def rule_from_meta(self, d: dict) -> Any:
        return self.rule_type(**d)

    def horizon_bars(self, bar_ms: int, rule: Any) -> int:
        """Bars a label looks ahead: rows closer than this to a split are embargoed."""
        return bars_back(rule.horizon_ms, bar_ms) if isinstance(rule, WindowLabelRule) else 1

    def vol_bars(self, bar_ms: int) -> int:
        return 7 if self.vol_window_ms is None else bars_back(self.vol_window_ms, bar_ms)

    def min_bars(self, bar_ms: int) -> int:
        """Bars before the first forecast: two for the daily set, one hour and one for the
        intraday set's open-interest change."""
        return 2 if self.name == "daily" else bars_back(3_600_000, bar_ms) + 1

    def momentum_bars(self, bar_ms: int) -> int:
        return 3 if self.name == "daily" else bars_back(MOMENTUM_MS, bar_ms)


DAILY = FeatureSet(
    name="daily",
    features=FEATURES,
    columns=BAR_COLUMNS,
    cluster=ClusterConfig(),
    rule_type=LabelRule,
    vol_window_ms=None,
    _compute=lambda bars, _bar_ms, bks, cluster: compute_features(bars, bks, cluster),
    _labels=lambda bars, _bar_ms, rule: next_bar_labels(bars, rule),
)
INTRADAY = FeatureSet(
    name="intraday",
    features=INTRADAY_FEATURES,
    columns=INTRADAY_BAR_COLUMNS,
    cluster=INTRADAY_CLUSTER,
    rule_type=WindowLabelRule,
    vol_window_ms=3_600_000,
    _compute=compute_intraday_features,
    _labels=window_labels,
)
SETS = {fs.name: fs for fs in (DAILY, INTRADAY)}


def feature_set(name: str) -> FeatureSet:
    try:
        return SETS[name]
    except KeyError:
        raise ValueError(f"unknown cascade feature set {name!r}; known: {sorted(SETS)}") from None


def baseline_inputs(bars: pd.DataFrame, fs: FeatureSet, bar_ms: int) -> pd.DataFrame:
    """Trailing volatility and absolute momentum per bar of one symbol, for the naive
    baselines (the daily volatility is the daily set's own ``vol_7``)."""
    b = bars.sort_values("time_ms")
    close = b["close"].astype(float)
    ret1 = close / close.shift(1) - 1.0
    k = fs.vol_bars(bar_ms)
    vol = ret1.rolling(k, min_periods=min(3, k)).std()
    mom = (close / close.shift(fs.momentum_bars(bar_ms)) - 1.0).abs()
    return pd.DataFrame({"base_vol": vol, "base_momentum": mom})
