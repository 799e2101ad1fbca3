"""funding-collector: funding, open interest, prices, books and liquidations from venues."""
