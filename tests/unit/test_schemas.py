"""The JSON Schema files in ``schemas/``: current with the code, and true of real events.

``test_committed_schemas_are_current`` fails when events.py changes and nobody ran
``escrowguard schemas``. The validator below covers exactly the keywords the generated
schemas use and refuses any other, so a new keyword cannot be skipped silently.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from escrowguard.cli import main
from escrowguard.errors import DecodeError
from escrowguard.events import EVENT_TYPE_BY_NAME, decode
from escrowguard.producers.generator import generate_history
from escrowguard.schemas import render_schemas, write_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
_ANNOTATIONS = {"description", "title", "$schema", "$defs"}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# --- a small, strict JSON Schema (2020-12) validator for the keywords in use ---------------


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, Decimal) and value == value.to_integral_value()
        )
    if kind == "number":
        return isinstance(value, int | Decimal) and not isinstance(value, bool)
    raise AssertionError(f"validator does not know type {kind!r}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def schema_errors(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty when it is valid)."""
    errors: list[str] = []
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "$ref":
            assert rule.startswith("#/$defs/"), rule
            errors += schema_errors(instance, root["$defs"][rule.removeprefix("#/$defs/")], root)
        elif keyword == "type":
            if not _is_type(instance, rule):
                errors.append(f"not of type {rule}: {instance!r}")
        elif keyword == "enum":
            if not any(_same(instance, option) for option in rule):
                errors.append(f"{instance!r} not in {rule}")
        elif keyword == "required":
            if isinstance(instance, dict):
                errors += [f"missing {name}" for name in rule if name not in instance]
        elif keyword == "properties":
            if isinstance(instance, dict):
                for name, sub in rule.items():
                    if name in instance:
                        errors += [f"{name}: {e}" for e in schema_errors(instance[name], sub, root)]
        elif keyword == "additionalProperties":
            assert rule is False, "only additionalProperties: false is used"
            if isinstance(instance, dict):
                known = schema.get("properties", {})
                errors += [f"unexpected {name}" for name in instance if name not in known]
        elif keyword in {"minLength", "maxLength", "pattern", "format"}:
            if isinstance(instance, str):
                errors += _string_errors(instance, keyword, rule)
        elif keyword in {"minimum", "maximum", "exclusiveMinimum", "multipleOf"}:
            if _is_type(instance, "number"):
                errors += _number_errors(Decimal(instance), keyword, Decimal(str(rule)))
        else:
            raise AssertionError(f"validator does not know keyword {keyword!r}")
    return errors


def _string_errors(value: str, keyword: str, rule: Any) -> list[str]:
    if keyword == "minLength":
        ok = len(value) >= rule
    elif keyword == "maxLength":
        ok = len(value) <= rule
    elif keyword == "pattern":
        ok = re.search(rule, value) is not None
    else:
        assert rule == "date-time", rule
        ok = _RFC3339.match(value) is not None and _parses(value)
    return [] if ok else [f"{keyword} {rule!r} fails for {value!r}"]


def _parses(value: str) -> bool:
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _number_errors(value: Decimal, keyword: str, rule: Decimal) -> list[str]:
    if keyword == "minimum":
        ok = value >= rule
    elif keyword == "maximum":
        ok = value <= rule
    elif keyword == "exclusiveMinimum":
        ok = value > rule
    else:
        ok = value % rule == 0
    return [] if ok else [f"{keyword} {rule} fails for {value}"]


def errors_for(data: bytes) -> list[str]:
    """Validate one wire message against the committed schema of its event_type."""
    instance = json.loads(data, parse_float=Decimal)
    schema = json.loads((SCHEMAS / f"{instance['event_type']}.schema.json").read_text())
    return schema_errors(instance, schema, schema)


# --- the files are current -----------------------------------------------------------------


def test_committed_schemas_are_current() -> None:
    """Fails when schemas/ is stale: run `escrowguard schemas` and commit the result."""
    for name, text in render_schemas().items():
        path = SCHEMAS / name
        assert path.exists(), f"{name} missing: run `escrowguard schemas`"
        assert path.read_text() == text, f"{name} is stale: run `escrowguard schemas`"
    assert write_schemas(SCHEMAS, check=True) == []


def test_no_stray_schema_files() -> None:
    assert sorted(p.name for p in SCHEMAS.iterdir()) == sorted(render_schemas())
    assert sorted(render_schemas()) == sorted(f"{t}.schema.json" for t in EVENT_TYPE_BY_NAME)


def test_each_schema_describes_its_struct() -> None:
    for event_type, cls in EVENT_TYPE_BY_NAME.items():
        schema = json.loads((SCHEMAS / f"{event_type}.schema.json").read_text())
        body = schema["$defs"][cls.__name__]
        assert schema["title"] == event_type
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert body["additionalProperties"] is False
        assert set(body["required"]) == {"event_type", *cls.__struct_fields__}
        assert set(body["properties"]) == set(body["required"])
        assert body["properties"]["event_type"] == {"enum": [event_type]}


def test_check_finds_stale_and_missing_files_and_writes_nothing(tmp_path: Path) -> None:
    rendered = render_schemas()
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    stale, missing = sorted(rendered)[:2]
    (tmp_path / stale).write_text(rendered[stale].replace("1-64", "1-63"))
    (tmp_path / missing).unlink()
    assert write_schemas(tmp_path, check=True) == sorted([stale, missing])
    assert not (tmp_path / missing).exists()
    assert write_schemas(tmp_path) == sorted([stale, missing])
    assert write_schemas(tmp_path, check=True) == []
    assert (tmp_path / stale).read_text() == rendered[stale]


def test_cli_check_exits_1_when_stale(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(main, ["schemas", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1
    assert "stale schema files" in stale.output
    assert runner.invoke(main, ["schemas", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(main, ["schemas", "--check", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(main, ["schemas", "--check", "--out", str(SCHEMAS)]).exit_code == 0


# --- real events validate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> list[bytes]:
    """The generator's wire events: every type, attacks included."""
    return generate_history(5, 0.1).events


def test_every_generated_event_validates(generated: list[bytes]) -> None:
    seen = set()
    for data in generated:
        assert errors_for(data) == [], data
        seen.add(decode(data).event_type)
    assert seen == set(EVENT_TYPE_BY_NAME)


_PLEDGE = (
    b'{"event_type":"pledge_created","event_id":"pledge:pl1","schema_version":1,'
    b'"occurred_at":"2025-01-03T10:00:00Z","project_id":"p1","pledge_id":"pl1",'
    b'"backer_id":"b1","amount":25.50,"source_wallet":"w1","voting_power":0.26}'
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"amount":25.50', b'"amount":25.505'),
        (b'"amount":25.50', b'"amount":0'),
        (b'"amount":25.50', b'"amount":"25.50"'),
        (b'"amount":25.50', b'"amount":true'),
        (b'"voting_power":0.26', b'"voting_power":-1'),
        (b'"schema_version":1', b'"schema_version":2'),
        (b'"schema_version":1', b'"schema_version":true'),
        (b'"pledge_id":"pl1"', b'"pledge_id":""'),
        (b'"pledge_id":"pl1"', b'"pledge_id":"' + b"x" * 65 + b'"'),
        (b'"pledge_id":"pl1"', b'"pledge_id":"a\\u0001"'),
        (b'"occurred_at":"2025-01-03T10:00:00Z"', b'"occurred_at":"2025-01-03T10:00:00"'),
        (b'"occurred_at":"2025-01-03T10:00:00Z"', b'"occurred_at":"yesterday"'),
        (b'"backer_id":"b1",', b""),
        (b'"backer_id":"b1",', b'"backer_id":"b1","note":1,'),
    ],
)
def test_schema_and_decoder_both_reject(old: bytes, new: bytes) -> None:
    """The validator is not vacuous: it rejects what the contract rejects, structurally."""
    assert errors_for(_PLEDGE) == []
    data = _PLEDGE.replace(old, new)
    assert data != _PLEDGE
    assert errors_for(data) != []
    with pytest.raises(DecodeError):
        decode(data)
