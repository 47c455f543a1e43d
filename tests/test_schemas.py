"""The published JSON Schemas in schemas/ match the pydantic models, and real
messages validate against them the same way the models do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from skyhop import schemas
from skyhop.models import (
    ChunkFailed,
    ChunkVerified,
    EventEnvelope,
    GatewayReady,
    JobReport,
    JobState,
    ReplicationConfig,
    TransferRequest,
    parse_message,
)

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "schemas"
CORPUS = ROOT / "tests" / "messages"
MODELS: dict[str, Any] = {
    "transfer_request": TransferRequest,
    "gateway_event": EventEnvelope,
    "replication_config": ReplicationConfig,
}


def _corpus() -> list[Any]:
    cases = []
    for name in MODELS:
        corpus = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
        for verdict in ("valid", "invalid"):
            for item in corpus[verdict]:
                cases.append(
                    pytest.param(
                        name, item["message"], verdict == "valid", id=f"{name}: {item['case']}"
                    )
                )
    return cases


@pytest.mark.parametrize(("name", "message", "valid"), _corpus())
def test_models_and_schemas_agree_on_the_corpus(name: str, message: Any, valid: bool) -> None:
    """tests/messages/: every message, valid or not, judged alike by the model (read
    strictly, as messages from other systems are) and by a real JSON Schema validator
    (jsonschema, on the published file, with skyhop's keywords and formats)."""
    try:
        parse_message(MODELS[name], json.dumps(message))
        by_model = True
    except ValueError:
        by_model = False
    published = json.loads((PUBLISHED / f"{name}.v1.schema.json").read_text())
    check = schemas.validator(name, published)
    errors = [e.message for e in check.iter_errors(message)]
    assert by_model == (not errors) == valid, (by_model, errors)


def test_a_plain_validator_sees_everything_but_skyhops_own_keywords() -> None:
    """What a validator that knows nothing of skyhop still enforces: the published
    schemas use only standard keywords, except three rules JSON Schema cannot say."""
    plain = Draft202012Validator(
        json.loads((PUBLISHED / "transfer_request.v1.schema.json").read_text()),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    base = {"source": "s3://src-bucket/a", "destination": "/tmp/x"}
    assert not plain.is_valid(dict(base, source="nope://x"))
    assert not plain.is_valid(dict(base, options={"recursive": "true"}))
    # the cross-field rule is skyhop's keyword: ignored here, enforced by schemas.validator
    ordered = dict(base, options={"min_size": 9, "max_size": 1})
    assert plain.is_valid(ordered) and not schemas.validator("transfer_request").is_valid(ordered)


def _validator(name: str) -> Draft202012Validator:
    [item] = [p for p in schemas.PUBLISHED if p.name == name]
    schema = json.loads((PUBLISHED / item.filename).read_text())
    return Draft202012Validator(schema)


@pytest.mark.parametrize("item", schemas.PUBLISHED, ids=lambda p: p.filename)
def test_published_file_matches_its_model(item: schemas.Published) -> None:
    path = PUBLISHED / item.filename
    assert path.is_file(), f"{path} is missing: run `python -m skyhop.schemas`"
    assert path.read_text(encoding="utf-8") == schemas.render(item), (
        f"{item.filename} disagrees with skyhop.models.{item.model.__name__}: "
        "run `python -m skyhop.schemas` and commit the result"
    )
    Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_no_unpublished_files() -> None:
    names = {p.filename for p in schemas.PUBLISHED}
    assert {p.name for p in PUBLISHED.glob("*.json")} == names


def test_check_mode_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schemas.main(["--out", str(tmp_path)]) == 0
    assert schemas.main(["--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / "transfer_request.v1.schema.json"
    changed = json.loads(target.read_text())
    changed["properties"]["options"]["description"] = "edited by hand"
    target.write_text(json.dumps(changed))
    assert schemas.main(["--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "transfer_request.v1.schema.json" in err and err.count("\n") == 1


def test_a_model_change_makes_the_check_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """What CI would see if someone added a field without regenerating."""
    from pydantic import create_model

    grown = create_model("TransferRequest", __base__=TransferRequest, priority=(int, 0))
    item = schemas.Published("transfer_request", 1, grown, title="skyhop TransferRequest")
    monkeypatch.setattr(schemas, "PUBLISHED", (item,))
    assert schemas.stale(PUBLISHED) == ["transfer_request.v1.schema.json"]


def _agree(name: str, model: Any, message: dict[str, Any]) -> bool:
    """Validate with the schema and the model; they must agree."""
    by_schema = _validator(name).is_valid(message)
    try:
        model.model_validate(message)
        by_model = True
    except ValueError:
        by_model = False
    assert by_schema == by_model, f"schema says {by_schema}, model says {by_model}: {message}"
    return by_schema


def test_transfer_requests() -> None:
    good = TransferRequest(source="s3://src-bucket/data/", destination="gs://dst-bucket/x/")
    assert _agree("transfer_request", TransferRequest, good.model_dump(mode="json"))
    assert _agree(
        "transfer_request",
        TransferRequest,
        {"source": "s3://src-bucket/a", "destination": "/tmp/out", "options": {"recursive": True}},
    )
    for bad in [
        {"destination": "s3://dst-bucket/x"},
        {"source": "s3://src-bucket/a", "destination": "/tmp/x", "colour": "red"},
        {"source": "s3://src-bucket/a", "destination": "/tmp/x", "version": 2},
        {"source": "s3://src-bucket/a", "destination": "/tmp/x", "options": {"connections": 0}},
    ]:
        assert not _agree("transfer_request", TransferRequest, bad)


def test_gateway_events() -> None:
    events = [
        ChunkVerified(
            job_id="j-1", gateway_id="g", chunk_id=3, object_id=0, crc32c="0a0b0c0d", length=5
        ),
        ChunkFailed(job_id="j-1", gateway_id="g", chunk_id=3, reason="tag mismatch"),
        GatewayReady(job_id="j-1", gateway_id="g", host="10.0.0.1", data_port=1, control_port=2),
    ]
    for event in events:
        message = EventEnvelope(event=event).model_dump(mode="json")
        assert _agree("gateway_event", EventEnvelope, message)
    wrong = EventEnvelope(event=events[0]).model_dump(mode="json")
    wrong["event"]["type"] = "chunk_exploded"
    assert not _agree("gateway_event", EventEnvelope, wrong)
    missing = EventEnvelope(event=events[0]).model_dump(mode="json")
    del missing["event"]["crc32c"]
    assert not _agree("gateway_event", EventEnvelope, missing)


def test_replication_config_and_job_report() -> None:
    config = {
        "version": 1,
        "rules": [
            {"name": "logs", "source_bucket": "src-bucket", "destination": "s3://dst-bucket/"}
        ],
    }
    assert _agree("replication_config", ReplicationConfig, config)
    assert not _agree("replication_config", ReplicationConfig, {"rules": [{"name": "x y"}]})
    report = JobReport(
        job_id="j-1",
        state=JobState.SUCCEEDED,
        source="s3://src-bucket/a",
        destination="/tmp/b",
        objects=1,
        objects_failed=0,
        bytes=10,
        seconds=1.5,
        gbps=0.1,
    )
    assert _validator("job_report").is_valid(report.model_dump(mode="json"))
