"""Write (or check) the JSON Schema files in ``schemas/``, generated from the wire contract."""

from __future__ import annotations

import json
from pathlib import Path

from escrowguard.events import json_schemas


def render_schemas() -> dict[str, str]:
    """File name -> exact file text for every event type."""
    return {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in sorted(json_schemas().items())
    }


def write_schemas(out: Path, check: bool = False) -> list[str]:
    """Write the schema files into ``out``; with ``check``, write nothing and return the
    names of files that are missing or differ."""
    stale = []
    for name, text in render_schemas().items():
        path = out / name
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale
