"""JSON Schema of every event, exported into ``proto/schema/`` and checked by a test.

The exported files are the contract other languages and tools read; the test that compares
them with the code makes any change to an event a visible, reviewed change of the contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from hean_proto.events import ALL_EVENTS

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"


def schema_documents() -> dict[str, str]:
    """File name to pretty JSON Schema text, one per event class."""
    docs: dict[str, str] = {}
    for cls in ALL_EVENTS:
        schema = msgspec.json.schema(cls)
        docs[f"{cls.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return docs


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, stale or no longer backed by an event."""
    expected = schema_documents()
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"missing {name}")
        elif path.read_text() != text:
            problems.append(f"stale {name}")
    for path in directory.glob("*.json"):
        if path.name not in expected:
            problems.append(f"orphan {path.name}")
    return problems


if __name__ == "__main__":
    for p in export():
        print(p)
