"""listing-scanner: new perpetual listings, their funding spikes, and alert delivery."""
