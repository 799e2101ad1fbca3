"""Exchange simulator: Binance USD-M, Bybit v5 linear and OKX swap wire formats on one port.

The venue layer talks to it through the very same ccxt code it uses against the real venues;
only the URLs and keys differ (``HEAN_VENUE_MODE=sim``).
"""

from hean.sim.scenario import Scenario, ScriptedEvent, load_scenario
from hean.sim.server import SimServer

__all__ = ["Scenario", "ScriptedEvent", "SimServer", "load_scenario"]
