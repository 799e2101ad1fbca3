"""Order execution shared by the order router, the backtester and tests.

Client order ids, the paper venue that fills against the latest order book, the ledger of
positions and PnL, the router's durable book of intents and orders, the risk gate, and the
executor that turns an approved intent into venue orders as one unit.
"""
