"""order-router: Executes approved intents on paper or live."""
