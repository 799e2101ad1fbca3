"""HEAN services: one thin package each, a logic class plus a main that binds it."""
