"""HEAN wire contract: events, units, subject map and codec."""

from hean_proto import codec, events, subjects

__all__ = ["codec", "events", "subjects"]
