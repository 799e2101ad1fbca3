"""The venue client over ccxt's async REST and websocket classes (``ccxt.pro``).

One class serves every venue: Binance USD-M, Bybit linear and OKX swaps are configured here,
any other ccxt id works by name. With ``market="spot"`` the same class trades the venue's
USDT spot pairs instead (Binance through ccxt's ``binance`` class, ccxt symbol ``BTC/USDT``
rather than ``BTC/USDT:USDT``): the spot leg of a hedge. Answers are checked field by field
and normalised into proto events with a canonical symbol; sizes are converted from contracts
to base units.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import ccxt.pro as ccxtpro
import msgspec
from ccxt.base import errors as cx

from hean.venues import okx_index
from hean.venues.base import (
    Balance,
    DuplicateClientOrderId,
    MarketInfo,
    OrderNotFound,
    OrderRejected,
    OrderResult,
    VenueDataError,
    VenueError,
    VenueFundingPayment,
    VenuePosition,
    VenueUnavailable,
)
from hean.venues.credentials import Credentials
from hean.venues.endpoints import ccxt_id, ccxt_options, point_at
from hean.venues.metrics import VenueMetrics
from hean.venues.okx_index import IndexPrice, index_for
from hean.venues.symbols import canonical
from hean.venues.validate import Checker
from hean_proto.events import BookLevel, BookTop, FundingRate, Liquidation, OpenInterest, PriceTick

log = logging.getLogger("hean.venues")
T = TypeVar("T")
H_MS = 3_600_000
TRANSIENT = (cx.OperationFailed,)  # network, rate limit, timeout, venue-side internal errors
DUPLICATE_MARKERS = ("-4116", "110072", "51016", "duplicate", "Duplicate order sent")
# venue answers that refuse an order outright (it does not exist at the venue), which ccxt
# does not always map to InsufficientFunds/InvalidOrder: Binance answers -2019 with HTTP 400
REJECT_MARKERS = (
    '"code":-2019',  # Binance: margin is insufficient
    '"code":-2022',  # Binance: reduce-only order rejected
    '"retCode":110007',  # Bybit: not enough balance
    '"retCode":110017',  # Bybit: reduce-only would increase the position
    '"sCode":"51008"',  # OKX: insufficient margin
)
STATUS = {"open": "open", "closed": "filled", "canceled": "canceled", "rejected": "rejected"}
# venue field that carries the native listing time in each market's raw ``info``
LISTING_FIELD = {"binance": "onboardDate", "bybit": "launchTime", "okx": "listTime"}


class CcxtVenueClient:
    """A VenueClient for one venue; safe to share between the tasks of one event loop."""

    def __init__(
        self,
        venue: str,
        credentials: Credentials | None = None,
        *,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        unhealthy_after: int = 3,
        metrics: VenueMetrics | None = None,
        clock: Callable[[], int] | None = None,
        market: Literal["perp", "spot"] = "perp",
    ) -> None:
        self.venue = venue
        self.market_type = market
        self.ccxt_id = ccxt_id(venue, market)
        cls = getattr(ccxtpro, self.ccxt_id, None)
        if cls is None:
            raise ValueError(f"venue {venue!r}: ccxt has no exchange {self.ccxt_id!r}")
        creds = credentials or Credentials()
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": int(timeout_s * 1000),
            "options": ccxt_options(venue, market),
        }
        if creds.present:
            config.update(apiKey=creds.api_key, secret=creds.secret, password=creds.passphrase)
        self.ex = _strict(cls)(config)
        self.ex.has["fetchCurrencies"] = False
        if base_url:
            self.ex.urls["api"] = point_at(self.ex.urls["api"], base_url, venue)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.unhealthy_after = unhealthy_after
        self.metrics = metrics or VenueMetrics()
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.failures = 0
        self.healthy = True
        self.last_ok_ms: int | None = None
        self.last_error = ""
        self.markets: dict[str, MarketInfo] = {}
        self.by_ccxt: dict[str, MarketInfo] = {}
        self.marks: dict[str, float] = {}
        self.rand = random.Random()
        self.on_bad_data: Callable[[VenueDataError, object], None] | None = None
        """Called with each refused item, so a service can dead-letter what it never published."""
        self.metrics.healthy.labels(venue).set(1)

    def bind_metrics(self, metrics: VenueMetrics) -> None:
        """Count into a service's registry (its /metrics endpoint) from now on."""
        self.metrics = metrics
        self.metrics.healthy.labels(self.venue).set(1 if self.healthy else 0)

    # ---- calling the venue ------------------------------------------------------------------

    async def _call(
        self, endpoint: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any
    ) -> T:
        """One venue call with bounded time, jittered retries of transient errors, health."""
        attempt = 0
        while True:
            try:
                result = await asyncio.wait_for(fn(*args, **kw), self.timeout_s * 1.5)
            except cx.BadResponse as exc:
                self._failed(endpoint)
                self.metrics.bad_data.labels(self.venue, endpoint, "body").inc()
                raise VenueDataError(self.venue, endpoint, "body", str(exc)[:200]) from exc
            except (TimeoutError, *TRANSIENT) as exc:
                attempt += 1
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if attempt > self.retries:
                    self._failed(endpoint)
                    raise VenueUnavailable(self.venue, endpoint, self.last_error) from exc
                self.metrics.calls.labels(self.venue, endpoint, "retried").inc()
                base = self.backoff_s * (4 if isinstance(exc, cx.RateLimitExceeded) else 1)
                delay = self.rand.uniform(0, min(base * 2**attempt, 30.0))
                log.info(
                    "%s %s: %s; retry %d in %.2fs",
                    self.venue,
                    endpoint,
                    self.last_error,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except cx.OrderNotFound as exc:
                self._ok(endpoint)
                raise OrderNotFound(self.venue, endpoint, str(exc)[:200]) from exc
            except (cx.DuplicateOrderId, cx.InvalidOrder, cx.InsufficientFunds) as exc:
                self._ok(endpoint)
                text = str(exc)
                if isinstance(exc, cx.DuplicateOrderId) or any(
                    m in text for m in DUPLICATE_MARKERS
                ):
                    raise DuplicateClientOrderId(self.venue, endpoint, text[:200]) from exc
                raise OrderRejected(self.venue, endpoint, text[:200]) from exc
            except cx.BaseError as exc:
                text = str(exc)
                if any(m in text for m in DUPLICATE_MARKERS):
                    self._ok(endpoint)
                    raise DuplicateClientOrderId(self.venue, endpoint, text[:200]) from exc
                if any(m in text.replace(" ", "") for m in REJECT_MARKERS):
                    self._ok(endpoint)
                    raise OrderRejected(self.venue, endpoint, text[:200]) from exc
                self._failed(endpoint)
                raise VenueError(
                    self.venue, endpoint, f"{type(exc).__name__}: {text[:200]}"
                ) from exc
            except (ValueError, TypeError, KeyError) as exc:
                # ccxt's parsers choke on some malformed bodies before we see them
                self._failed(endpoint)
                self.metrics.bad_data.labels(self.venue, endpoint, "body").inc()
                raise VenueDataError(
                    self.venue, endpoint, "body", f"{type(exc).__name__}: {exc}"
                ) from exc
            self._ok(endpoint)
            return result

    def _ok(self, endpoint: str) -> None:
        self.metrics.calls.labels(self.venue, endpoint, "ok").inc()
        self.failures = 0
        self.last_ok_ms = self.clock()
        if not self.healthy:
            log.warning("%s is answering again", self.venue)
        self.healthy = True
        self.metrics.healthy.labels(self.venue).set(1)

    def _failed(self, endpoint: str) -> None:
        self.metrics.calls.labels(self.venue, endpoint, "failed").inc()
        self.failures += 1
        if self.failures >= self.unhealthy_after and self.healthy:
            log.error(
                "%s marked unhealthy after %d failures: %s",
                self.venue,
                self.failures,
                self.last_error,
            )
            self.healthy = False
            self.metrics.healthy.labels(self.venue).set(0)

    def _bad(self, exc: VenueDataError, item: object = None) -> None:
        self.metrics.bad_data.labels(self.venue, exc.endpoint, exc.field).inc()
        log.warning("%s", exc)
        if self.on_bad_data is not None:
            self.on_bad_data(exc, item)

    def health(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "healthy": self.healthy,
            "consecutive_failures": self.failures,
            "last_ok_ms": self.last_ok_ms,
            "last_error": self.last_error,
        }

    # ---- markets ----------------------------------------------------------------------------

    async def load_markets(self) -> list[MarketInfo]:
        raw = await self._call("load_markets", self.ex.load_markets, True)
        intervals: dict[str, float] = {}
        spot = self.market_type == "spot"
        if self.ex.has.get("fetchFundingIntervals") and not spot:
            try:
                got = await self._call("fetch_funding_intervals", self.ex.fetch_funding_intervals)
                for sym, item in (got or {}).items():
                    hours = _interval_hours(item.get("interval"))
                    if hours:
                        intervals[sym] = hours
            except VenueError as exc:
                log.warning("%s: funding intervals unavailable: %s", self.venue, exc)
        out: list[MarketInfo] = []
        for m in raw.values():
            # linear: margined and settled in the quote currency (some answers omit the flag)
            linear = m.get("linear") or (m.get("settle") and m.get("settle") == m.get("quote"))
            if spot:
                wanted = m.get("spot") and m.get("quote") == "USDT"
            else:
                wanted = m.get("swap") and linear
            if not wanted:
                continue
            try:
                info = self._market_info(m, intervals)
            except VenueDataError as exc:
                self._bad(exc, m)
                continue
            if info is not None:
                out.append(info)
        self.markets = {m.symbol: m for m in out}
        self.by_ccxt = {m.venue_symbol: m for m in out}
        return out

    def _market_info(self, m: dict, intervals: dict[str, float]) -> MarketInfo | None:
        chk = Checker(self.venue, "load_markets")
        symbol = canonical(str(m.get("base", "")), str(m.get("settle") or m.get("quote") or ""))
        if symbol is None:
            return None
        raw = _dict(m.get("info"))
        listed = raw.get(LISTING_FIELD.get(self.venue, ""), None) or m.get("created")
        precision = _dict(m.get("precision"))
        limits = _dict(_dict(m.get("limits")).get("amount"))
        if not isinstance(m.get("symbol"), str) or not isinstance(m.get("id"), str):
            raise chk.fail("symbol", f"market without a symbol or id: {m.get('symbol')!r}")
        contract = chk.positive(m.get("contractSize") or 1, "contractSize")
        interval = intervals.get(m["symbol"])
        if interval is None and self.venue == "bybit" and raw.get("fundingInterval"):
            minutes = chk.positive(raw["fundingInterval"], "fundingInterval")
            if not 30 <= minutes <= 1440:
                raise chk.fail("fundingInterval", f"{minutes} minutes is not a funding interval")
            interval = minutes / 60.0
        if interval is None and self.venue == "binance" and self.market_type == "perp":
            # Binance lists in fundingInfo only symbols whose interval differs from 8 h
            interval = 8.0
        return MarketInfo(
            venue=self.venue,
            symbol=symbol,
            venue_symbol=m["symbol"],
            native_id=str(m["id"]),
            listed_ms=chk.timestamp_or_none(listed, LISTING_FIELD.get(self.venue, "created")),
            contract_size=contract,
            tick_size=chk.positive_or_none(precision.get("price"), "tickSize"),
            lot_size=_lot(chk, precision.get("amount"), contract),
            min_qty=_lot(chk, limits.get("min"), contract),
            taker_fee=chk.optional(m.get("taker"), "taker"),
            maker_fee=chk.optional(m.get("maker"), "maker"),
            interval_hours=interval,
            active=bool(m.get("active", True)),
        )

    async def _ensure_markets(self) -> None:
        if not self.markets:
            await self.load_markets()

    def _market(self, symbol: str, endpoint: str) -> MarketInfo:
        m = self.markets.get(symbol)
        if m is None:
            raise VenueError(self.venue, endpoint, f"unknown symbol {symbol!r}")
        return m

    def _from_ccxt(self, ccxt_symbol: object) -> MarketInfo | None:
        return self.by_ccxt.get(ccxt_symbol) if isinstance(ccxt_symbol, str) else None

    # ---- funding ----------------------------------------------------------------------------

    async def fetch_funding_rates(self, symbols: list[str] | None = None) -> list[FundingRate]:
        await self._ensure_markets()
        raw = await self._call("fetch_funding_rates", self.ex.fetch_funding_rates)
        now = self.clock()
        wanted = set(symbols) if symbols is not None else None
        out = []
        for item in raw.values():
            m = self._from_ccxt(item.get("symbol"))
            if m is None or (wanted is not None and m.symbol not in wanted):
                continue
            try:
                out.append(self._funding(m, item, now))
            except VenueDataError as exc:
                self._bad(exc, item)
        return out

    def _funding(self, m: MarketInfo, item: dict, now: int) -> FundingRate:
        chk = Checker(self.venue, "fetch_funding_rates")
        raw = _dict(item.get("info"))
        cap = _cap(raw)
        rate = chk.rate(item.get("fundingRate"), "fundingRate", cap)
        next_ms = chk.timestamp_or_none(
            item.get("fundingTimestamp") or item.get("nextFundingTimestamp"), "nextFundingTime"
        )
        interval = self._stated_interval(chk, raw, item, m)
        if interval is not None and interval != m.interval_hours:
            # OKX states the interval only through its funding times: learn it here
            self._learn_interval(m, interval)
        if interval is None:
            raise chk.fail("interval", "funding interval unknown (never assumed)")
        mark = chk.positive_or_none(item.get("markPrice"), "markPrice")
        index = chk.positive_or_none(item.get("indexPrice"), "indexPrice")
        if mark is not None:
            self.marks[m.symbol] = mark
        ts = item.get("timestamp") or now
        return FundingRate(
            ts_ms=chk.timestamp(ts, "timestamp"),
            venue=self.venue,
            symbol=m.symbol,
            rate=rate,
            interval_hours=interval,
            next_funding_ms=next_ms,
            mark_price=mark,
            index_price=index,
        )

    def _stated_interval(self, chk: Checker, raw: dict, item: dict, m: MarketInfo) -> float | None:
        """The interval the venue itself states, in hours; ccxt's derived one only for others."""
        if self.venue == "bybit":
            stated = raw.get("fundingIntervalHour")
            return chk.positive(stated, "fundingIntervalHour") if stated else m.interval_hours
        if self.venue == "binance":
            return m.interval_hours
        return _interval_hours(item.get("interval")) or m.interval_hours

    def _learn_interval(self, m: MarketInfo, hours: float) -> None:
        learned = msgspec.structs.replace(m, interval_hours=hours)
        self.markets[m.symbol] = learned
        self.by_ccxt[m.venue_symbol] = learned

    async def fetch_funding_history(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[FundingRate]:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_funding_history")
        raw = await self._call(
            "fetch_funding_history",
            self.ex.fetch_funding_rate_history,
            m.venue_symbol,
            since_ms,
            limit,
        )
        chk = Checker(self.venue, "fetch_funding_history")
        rows: list[tuple[int, float]] = []
        for item in raw:
            try:
                t = chk.timestamp(item.get("timestamp"), "fundingTime")
                cap = _cap(_dict(item.get("info")))
                rows.append((t, chk.rate(item.get("fundingRate"), "fundingRate", cap)))
            except VenueDataError as exc:
                self._bad(exc, item)
        rows.sort()
        interval = m.interval_hours or _median_gap_hours(rows)
        if interval is None:
            self._bad(chk.fail("interval", f"{symbol}: funding interval unknown"))
            return []
        out = [
            FundingRate(
                ts_ms=t,
                venue=self.venue,
                symbol=symbol,
                rate=rate,
                interval_hours=interval,
                settled=True,
                funding_time_ms=t,
            )
            for t, rate in rows
        ]
        return out

    # ---- prices, open interest, books ---------------------------------------------------------

    async def fetch_prices(self, symbols: list[str] | None = None) -> list[PriceTick]:
        await self._ensure_markets()
        if self.ex.has.get("fetchMarkPrices") and self.venue != "bybit":
            raw = await self._call("fetch_prices", self.ex.fetch_mark_prices)
        else:
            raw = await self._call("fetch_prices", self.ex.fetch_tickers)
        index = await self._index_prices() if self._separate_index else {}
        now = self.clock()
        wanted = set(symbols) if symbols is not None else None
        out = []
        chk = Checker(self.venue, "fetch_prices")
        for item in raw.values():
            m = self._from_ccxt(item.get("symbol"))
            if m is None or (wanted is not None and m.symbol not in wanted):
                continue
            try:
                mark = chk.positive(item.get("markPrice") or item.get("last"), "markPrice")
                ts = chk.timestamp(item.get("timestamp") or now, "timestamp")
                tick = PriceTick(
                    ts_ms=ts,
                    venue=self.venue,
                    symbol=m.symbol,
                    mark=mark,
                    index=chk.positive_or_none(item.get("indexPrice"), "indexPrice"),
                    last=chk.positive_or_none(item.get("last"), "last"),
                )
            except VenueDataError as exc:
                self._bad(exc, item)
                continue
            if tick.index is None and index:
                try:
                    tick = msgspec.structs.replace(tick, index=index_for(index, m.symbol, ts))
                except VenueDataError as exc:  # the mark still goes out, without an index
                    self._bad(exc, {"symbol": m.symbol, "mark_ts_ms": ts, "index": index[m.symbol]})
            self.marks[m.symbol] = mark
            out.append(tick)
        return out

    @property
    def _separate_index(self) -> bool:
        """OKX's mark prices carry no index: its perpetual ticks take it from index-tickers."""
        return self.venue == "okx" and self.market_type == "perp"

    async def _index_prices(self) -> dict[str, IndexPrice]:
        """Every USDT index in one request; on failure none, and the marks go out without."""
        try:
            body = await self._call(
                okx_index.ENDPOINT,
                self.ex.publicGetMarketIndexTickers,
                {"quoteCcy": okx_index.QUOTE},
            )
        except VenueError as exc:  # counted by _call
            log.warning("%s: no index prices this round: %s", self.venue, exc)
            return {}
        try:
            index, bad = okx_index.parse_index_tickers(body, self.venue)
        except VenueDataError as exc:
            self._bad(exc, body)
            return {}
        for exc, row in bad:
            self._bad(exc, row)
        return index

    async def _mark(self, m: MarketInfo) -> float:
        if m.symbol not in self.marks:
            await self.fetch_prices([m.symbol])
        if m.symbol not in self.marks:
            raise VenueDataError(
                self.venue, "fetch_prices", "markPrice", f"no price for {m.symbol}"
            )
        return self.marks[m.symbol]

    async def fetch_open_interest(self, symbol: str) -> OpenInterest:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_open_interest")
        item = await self._call("fetch_open_interest", self.ex.fetch_open_interest, m.venue_symbol)
        chk = Checker(self.venue, "fetch_open_interest")
        try:
            amount = chk.optional(item.get("openInterestAmount"), "openInterestAmount")
            value = chk.optional(item.get("openInterestValue"), "openInterestValue")
            if amount is None and value is None:
                raise chk.fail("openInterest", "neither amount nor value given")
            base_qty = None if amount is None else amount * _oi_unit(self.venue, m)
            if value is None:
                assert base_qty is not None
                value = base_qty * await self._mark(m)
            if value < 0 or (base_qty is not None and base_qty < 0):
                raise chk.fail("openInterest", f"negative: {value}")
            ts = chk.timestamp(item.get("timestamp") or self.clock(), "timestamp")
        except VenueDataError as exc:
            self._bad(exc, item)
            raise
        return OpenInterest(
            ts_ms=ts, venue=self.venue, symbol=symbol, oi_usd=value, oi_contracts=amount
        )

    async def fetch_open_interest_history(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[OpenInterest]:
        """Hourly open interest where the venue keeps it. Bybit states only base units; those
        points are valued at the current mark (the venue gives no historical value)."""
        await self._ensure_markets()
        m = self._market(symbol, "fetch_open_interest_history")
        raw = await self._call(
            "fetch_open_interest_history",
            self.ex.fetch_open_interest_history,
            m.venue_symbol,
            "1h",
            since_ms,
            limit,
        )
        chk = Checker(self.venue, "fetch_open_interest_history")
        out = []
        for item in raw:
            try:
                amount = chk.optional(item.get("openInterestAmount"), "openInterestAmount")
                value = chk.optional(item.get("openInterestValue"), "openInterestValue")
                if value is None:
                    if amount is None:
                        raise chk.fail("openInterest", "neither amount nor value given")
                    value = amount * _oi_unit(self.venue, m) * await self._mark(m)
                if value < 0:
                    raise chk.fail("openInterestValue", f"negative: {value}")
                out.append(
                    OpenInterest(
                        ts_ms=chk.timestamp(item.get("timestamp"), "timestamp"),
                        venue=self.venue,
                        symbol=symbol,
                        oi_usd=value,
                        oi_contracts=amount,
                    )
                )
            except VenueDataError as exc:
                self._bad(exc, item)
        out.sort(key=lambda e: e.ts_ms)
        return out

    async def fetch_book_top(self, symbol: str, depth: int = 5) -> BookTop:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_book_top")
        limit = _book_limit(self.venue, depth)
        book = await self._call("fetch_book_top", self.ex.fetch_order_book, m.venue_symbol, limit)
        chk = Checker(self.venue, "fetch_book_top")
        try:
            bids = [self._level(chk, lv, m, "bids") for lv in book.get("bids", [])[:depth]]
            asks = [self._level(chk, lv, m, "asks") for lv in book.get("asks", [])[:depth]]
            if not bids or not asks:
                raise chk.fail("bids/asks", "empty side")
            if bids[0].price >= asks[0].price:
                raise chk.fail("bids/asks", f"crossed book {bids[0].price} >= {asks[0].price}")
            ts = chk.timestamp(book.get("timestamp") or self.clock(), "timestamp")
        except VenueDataError as exc:
            self._bad(exc, book)
            raise
        return BookTop(ts_ms=ts, venue=self.venue, symbol=symbol, bids=bids, asks=asks)

    def _level(self, chk: Checker, lv: Any, m: MarketInfo, side: str) -> BookLevel:
        if not isinstance(lv, (list, tuple)) or len(lv) < 2:
            raise chk.fail(side, f"level is not [price, size]: {lv!r}")
        price = chk.positive(lv[0], f"{side}.price")
        size = chk.non_negative(lv[1], f"{side}.size") * m.contract_size
        return BookLevel(price, size)

    # ---- liquidations -----------------------------------------------------------------------

    async def watch_liquidations(
        self, symbols: list[str] | None = None
    ) -> AsyncIterator[Liquidation]:
        """Liquidations as the venue streams them; reconnects are ccxt's, errors are raised."""
        await self._ensure_markets()
        wanted = symbols or sorted(self.markets)
        ccxt_symbols = [self.markets[s].venue_symbol for s in wanted if s in self.markets]
        if not ccxt_symbols:
            return
        if self.ex.has.get("watchLiquidationsForSymbols") is True:

            async def batch() -> list[dict]:
                return await self.ex.watch_liquidations_for_symbols(ccxt_symbols)

            sources = [batch]
        elif self.ex.has.get("watchLiquidations"):
            sources = [(lambda s=s: self.ex.watch_liquidations(s)) for s in ccxt_symbols]
        else:
            raise NotImplementedError(f"{self.venue} streams no liquidations")
        queue: asyncio.Queue[list[dict] | BaseException] = asyncio.Queue()

        async def pump(src: Callable[[], Awaitable[list[dict]]]) -> None:
            while True:
                try:
                    await queue.put(await src())
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # handed to the consumer, which decides
                    await queue.put(exc)
                    return

        tasks = [asyncio.create_task(pump(src)) for src in sources]
        try:
            while True:
                got = await queue.get()
                if isinstance(got, BaseException):
                    self._failed("watch_liquidations")
                    raise VenueUnavailable(
                        self.venue, "watch_liquidations", str(got)[:200]
                    ) from got
                self._ok("watch_liquidations")
                for item in got:
                    liq = self._liquidation(item)
                    if liq is not None:
                        yield liq
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _liquidation(self, item: dict) -> Liquidation | None:
        chk = Checker(self.venue, "watch_liquidations")
        try:
            m = self._from_ccxt(item.get("symbol"))
            if m is None:
                raise chk.fail("symbol", f"unknown symbol {item.get('symbol')!r}")
            price = chk.positive(item.get("price"), "price")
            base_qty = item.get("baseValue")
            if base_qty is None:
                base_qty = chk.positive(item.get("contracts"), "contracts") * m.contract_size
            qty = chk.positive(base_qty, "baseValue")
            side = _liquidation_side(self.venue, item)
            if side is None:
                raise chk.fail("side", "side of the liquidated order not given")
            if not math.isfinite(qty * price):
                raise chk.fail("baseValue", f"notional {qty} x {price} overflows")
            return Liquidation(
                ts_ms=chk.timestamp(item.get("timestamp"), "timestamp"),
                venue=self.venue,
                symbol=m.symbol,
                side=side,
                price=price,
                qty=qty,
                notional_usd=qty * price,
            )
        except VenueDataError as exc:
            self._bad(exc, item)
            return None

    # ---- private ----------------------------------------------------------------------------

    async def fetch_balance(self) -> list[Balance]:
        raw = await self._call("fetch_balance", self.ex.fetch_balance)
        chk = Checker(self.venue, "fetch_balance")
        out = []
        for asset, total in (raw.get("total") or {}).items():
            if total is None:
                continue
            out.append(
                Balance(
                    venue=self.venue,
                    asset=asset,
                    total=chk.number(total, f"total.{asset}"),
                    free=chk.number((raw.get("free") or {}).get(asset) or 0, f"free.{asset}"),
                )
            )
        return out

    async def fetch_positions(self) -> list[VenuePosition]:
        await self._ensure_markets()
        raw = await self._call("fetch_positions", self.ex.fetch_positions)
        chk = Checker(self.venue, "fetch_positions")
        out = []
        for p in raw:
            m = self._from_ccxt(p.get("symbol"))
            if m is None:
                continue
            contracts = chk.number(p.get("contracts") or 0, "contracts")
            if contracts == 0:
                continue
            sign = -1.0 if p.get("side") == "short" else 1.0
            out.append(
                VenuePosition(
                    venue=self.venue,
                    symbol=m.symbol,
                    qty=sign * abs(contracts) * m.contract_size,
                    entry_price=chk.positive_or_none(p.get("entryPrice"), "entryPrice"),
                    mark_price=chk.positive_or_none(p.get("markPrice"), "markPrice"),
                    unrealized_usd=chk.number(p.get("unrealizedPnl") or 0, "unrealizedPnl"),
                )
            )
        return out

    async def create_order(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: float,
        client_order_id: str,
        *,
        price: float | None = None,
        reduce_only: bool = False,
    ) -> OrderResult:
        """Send an order once. On a lost answer, look it up by client id before any resend."""
        await self._ensure_markets()
        m = self._market(symbol, "create_order")
        amount = qty / m.contract_size
        params: dict[str, Any] = {"clientOrderId": client_order_id}
        if reduce_only and self.market_type == "perp":  # spot has no such flag: a sell sells
            params["reduceOnly"] = True
        kind = "limit" if price is not None else "market"
        try:
            order = await self._call_once(
                "create_order",
                self.ex.create_order,
                m.venue_symbol,
                kind,
                side,
                amount,
                price,
                params,
            )
        except VenueUnavailable:
            # the order may or may not have reached the venue: ask, never resend blindly
            try:
                return await self.fetch_order(symbol, client_order_id)
            except OrderNotFound:
                raise VenueUnavailable(
                    self.venue,
                    "create_order",
                    f"{client_order_id}: not accepted (not found after timeout)",
                ) from None
        result = self._order(order, m, client_order_id)
        if not order.get("status") or (result.status == "open" and kind == "market"):
            # some venues acknowledge with ids only; the state comes from a lookup
            return await self.fetch_order(symbol, client_order_id)
        return result

    async def round_qty(self, symbol: str, qty: float) -> float:
        """``qty`` rounded down to what the venue accepts (its lot), 0.0 if below its minimum.

        Knowing the quantity before sending keeps a unit's legs comparable: an order the venue
        trims to its lot is not mistaken for a partial fill, and no dust order is ever sent.
        """
        await self._ensure_markets()
        m = self._market(symbol, "round_qty")
        try:
            amount = float(self.ex.amount_to_precision(m.venue_symbol, qty / m.contract_size))
        except (cx.InvalidOrder, cx.ArgumentsRequired, ValueError):
            return 0.0
        if m.min_qty and amount * m.contract_size < m.min_qty - 1e-15:
            return 0.0
        return amount * m.contract_size

    async def _call_once(self, endpoint: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like _call but without retries: for calls that must not be repeated."""
        saved, self.retries = self.retries, 0
        try:
            return await self._call(endpoint, fn, *args)
        finally:
            self.retries = saved

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderResult:
        await self._ensure_markets()
        m = self._market(symbol, "cancel_order")
        # ccxt forwards Bybit params as they are; Bybit names the client id orderLinkId
        key = "orderLinkId" if self.venue == "bybit" else "clientOrderId"
        order = await self._call(
            "cancel_order", self.ex.cancel_order, None, m.venue_symbol, {key: client_order_id}
        )
        if not order.get("status"):
            return await self.fetch_order(symbol, client_order_id)
        return self._order(order, m, client_order_id)

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderResult:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_order")
        if self.venue == "bybit":
            # ccxt's Bybit fetchOrder always sends an orderId; ask by orderLinkId alone
            order = await self._call("fetch_order", self._bybit_order, m, client_order_id)
        else:
            params = {"clientOrderId": client_order_id}
            order = await self._call(
                "fetch_order", self.ex.fetch_order, None, m.venue_symbol, params
            )
        return self._order(order, m, client_order_id)

    async def _bybit_order(self, m: MarketInfo, client_order_id: str) -> dict:
        category = "spot" if self.market_type == "spot" else "linear"
        request = {"category": category, "symbol": m.native_id, "orderLinkId": client_order_id}
        for method in (self.ex.privateGetV5OrderRealtime, self.ex.privateGetV5OrderHistory):
            response = await method(request)
            rows = ((response or {}).get("result") or {}).get("list") or []
            if rows:
                return self.ex.parse_order(rows[0], self.ex.market(m.venue_symbol))
        raise cx.OrderNotFound(f"bybit order {client_order_id} not found")

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_open_orders") if symbol else None
        raw = await self._call(
            "fetch_open_orders", self.ex.fetch_open_orders, m.venue_symbol if m else None
        )
        out = []
        for o in raw:
            mk = self._from_ccxt(o.get("symbol"))
            if mk is not None:
                out.append(self._order(o, mk, str(o.get("clientOrderId") or "")))
        return out

    def _order(self, o: dict, m: MarketInfo, client_order_id: str) -> OrderResult:
        chk = Checker(self.venue, "order")
        status = STATUS.get(str(o.get("status")), "unknown")
        amount = chk.optional(o.get("amount"), "amount") or 0.0
        filled = chk.optional(o.get("filled"), "filled") or 0.0
        if status == "open" and filled > 0:
            status = "partially_filled"
        fee = o.get("fee") or {}
        fee_cost = chk.optional(fee.get("cost"), "fee.cost") if isinstance(fee, dict) else None
        average = chk.positive_or_none(o.get("average"), "average")
        base = str(m.venue_symbol).split("/", 1)[0]
        if fee_cost and average and isinstance(fee, dict) and fee.get("currency") == base:
            fee_cost *= average  # spot buys may pay commission in the asset bought
        reason = ""
        if not fee_cost and filled > 0 and average and m.taker_fee:
            # Binance order answers carry no commission (it is in the trade list); charging
            # the venue's taker rate keeps the ledger from showing fills as free
            fee_cost = filled * m.contract_size * average * m.taker_fee
            reason = "fee estimated from the taker rate"
        return OrderResult(
            venue=self.venue,
            symbol=m.symbol,
            client_order_id=str(o.get("clientOrderId") or client_order_id),
            venue_order_id=str(o["id"]) if o.get("id") else None,
            side="sell" if o.get("side") == "sell" else "buy",
            qty=amount * m.contract_size,
            status=status,  # type: ignore[arg-type]
            filled_qty=filled * m.contract_size,
            avg_price=average,
            fee_usd=abs(fee_cost or 0.0),
            ts_ms=int(o.get("lastUpdateTimestamp") or o.get("timestamp") or self.clock()),
            reason=reason,
        )

    async def fetch_funding_payments(
        self, symbol: str | None = None, since_ms: int | None = None
    ) -> list[VenueFundingPayment]:
        await self._ensure_markets()
        m = self._market(symbol, "fetch_funding_payments") if symbol else None
        raw = await self._call(
            "fetch_funding_payments",
            self.ex.fetch_funding_history,
            m.venue_symbol if m else None,
            since_ms,
        )
        chk = Checker(self.venue, "fetch_funding_payments")
        out = []
        for item in raw:
            mk = self._from_ccxt(item.get("symbol"))
            if mk is None:
                continue
            try:
                info = _dict(item.get("info"))
                rate = (
                    chk.optional(info.get("feeRate"), "feeRate") if self.venue == "bybit" else None
                )
                out.append(
                    VenueFundingPayment(
                        venue=self.venue,
                        symbol=mk.symbol,
                        ts_ms=chk.timestamp(item.get("timestamp"), "timestamp"),
                        amount_usd=_funding_amount(self.venue, chk, item),
                        rate=rate,
                    )
                )
            except VenueDataError as exc:
                self._bad(exc, item)
        out.sort(key=lambda p: p.ts_ms)
        return out

    async def close(self) -> None:
        await self.ex.close()


def _strict(cls: type) -> type:
    """The ccxt class, refusing bodies that look like JSON but do not parse.

    ccxt turns such a body into ``None`` and its parsers into empty lists: a malformed answer
    would read as "no data" instead of an error.
    """

    def parse_json(self: Any, http_response: Any) -> Any:
        parsed = cls.parse_json(self, http_response)
        text = http_response.lstrip() if isinstance(http_response, str) else ""
        if parsed is None and text[:1] in ("{", "["):
            raise cx.BadResponse(f"{self.id}: malformed JSON: {http_response[:120]!r}")
        return parsed

    return type(cls.__name__, (cls,), {"parse_json": parse_json})


def _dict(value: Any) -> dict:
    """A nested part of an answer, or an empty one when the venue sent something else."""
    return value if isinstance(value, dict) else {}


def _interval_hours(value: Any) -> float | None:
    """ccxt writes intervals as ``'8h'``, ``'1h'``, ``'30m'``."""
    if not value or not isinstance(value, str):
        return None
    try:
        if value.endswith("h"):
            return float(value[:-1])
        if value.endswith("m"):
            return float(value[:-1]) / 60.0
    except ValueError:
        return None
    return None


def _funding_amount(venue: str, chk: Checker, item: dict) -> float:
    """Signed USD, positive received. Bybit books funding as a fee: positive ``execFee`` is paid,
    and ccxt passes it through unchanged."""
    fee = _dict(item.get("info")).get("execFee")
    if venue == "bybit" and fee not in (None, ""):
        return -chk.number(fee, "execFee")
    return chk.number(item.get("amount"), "amount")


def _median_gap_hours(rows: list[tuple[int, float]]) -> float | None:
    """The funding interval from the spacing of settlements, when the venue states none."""
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(rows))
    if not gaps:
        return None
    return round(gaps[len(gaps) // 2] / H_MS * 4) / 4 or None


def _cap(raw: dict) -> float | None:
    for key in ("fundingCap", "maxFundingRate", "adjustedFundingRateCap", "upperFundingRate"):
        if raw.get(key) not in (None, ""):
            try:
                return abs(float(raw[key]))
            except (TypeError, ValueError):
                return None
    return None


def _lot(chk: Checker, value: Any, contract: float) -> float | None:
    x = chk.positive_or_none(value, "lot")
    if x is None:
        return None
    if not x * contract > 0:
        raise chk.fail("lot", f"{x} contracts of {contract} is no size")
    return x * contract


def _oi_unit(venue: str, m: MarketInfo) -> float:
    """Base units per unit of ccxt's openInterestAmount (contracts on OKX)."""
    return m.contract_size if venue == "okx" else 1.0


def _book_limit(venue: str, depth: int) -> int:
    if venue == "binance":
        return next(n for n in (5, 10, 20, 50, 100, 500, 1000) if n >= depth)
    return depth


def _liquidation_side(venue: str, item: dict) -> Literal["buy", "sell"] | None:
    """The liquidated order's side: ``sell`` closes a long."""
    raw = _dict(item.get("info"))
    if venue == "binance":
        inner = raw.get("o") if isinstance(raw.get("o"), dict) else raw  # ccxt hands ``o``
        s = str(inner.get("S", "")).lower()
    elif venue == "bybit":
        position = str(raw.get("S", "")).lower()  # Bybit names the liquidated position
        s = "sell" if position == "buy" else "buy" if position == "sell" else ""
    elif venue == "okx":
        details = raw.get("details") if isinstance(raw.get("details"), list) else [raw]
        first = details[0] if details and isinstance(details[0], dict) else {}
        s = str(first.get("side", "")).lower()
    else:
        s = str(item.get("side") or "").lower()
    return s if s in ("buy", "sell") else None  # type: ignore[return-value]
