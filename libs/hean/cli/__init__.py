"""The ``hean`` command line."""
