"""Named remotes in $SKYHOP_HOME/remotes.toml and the `skyhop remote` verbs."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from skyhop import remotes
from skyhop.cli import main
from skyhop.errors import NotFoundError, UsageError
from skyhop.remotes import ControlPlaneProfile
from skyhop.state import open_manifest

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/Skyhop-Requests"
ADD = [
    "remote",
    "add",
    "prod",
    "--cloud",
    "aws",
    "--requests-queue",
    QUEUE,
    "--manifest",
    "dynamodb://Skyhop-Manifest?region=us-east-1",
    "--region",
    "us-east-1",
    "--stack",
    "Skyhop",
]


def test_add_list_show_remove(skyhop_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ADD) == 0
    path = skyhop_home / "remotes.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = tomllib.loads(path.read_text())
    assert raw == {
        "prod": {
            "type": "controlplane",
            "cloud": "aws",
            "requests_queue": QUEUE,
            "manifest": "dynamodb://Skyhop-Manifest?region=us-east-1",
            "region": "us-east-1",
            "stack": "Skyhop",
        }
    }
    capsys.readouterr()
    assert main(["remote", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prod"]["requests_queue"] == QUEUE
    assert main(["remote", "show", "prod"]) == 0
    shown = capsys.readouterr().out
    assert tomllib.loads(shown) == raw  # show prints a table another user can add --from

    # the same name again is refused, --replace overwrites
    assert main(ADD) == 2
    assert "exists already" in capsys.readouterr().err
    assert main([*ADD, "--region", "eu-west-1", "--replace"]) == 0
    assert remotes.get_remote("prod").region == "eu-west-1"  # type: ignore[union-attr]

    assert main(["remote", "remove", "prod"]) == 0
    assert remotes.load_remotes() == {}
    assert main(["remote", "remove", "prod"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "skyhop: error: no remote 'prod'; see `skyhop remote list`"


def test_a_platform_team_hands_over_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handed = tmp_path / "team.toml"
    handed.write_text(
        f"""
[team-aws]
type = "controlplane"
cloud = "aws"
requests_queue = "{QUEUE}"
manifest = "dynamodb://T"
description = "the data platform's control plane"

[team-gcp]
type = "controlplane"
cloud = "gcp"
requests_queue = "pubsub://proj/skyhop-requests"
manifest = "firestore://proj/skyhop"
"""
    )
    assert main(["remote", "add", "team-gcp", "--from", str(handed)]) == 0
    assert set(remotes.load_remotes()) == {"team-gcp"}
    assert main(["remote", "add", "--from", str(handed), "--replace"]) == 0
    planes = remotes.control_planes()
    assert set(planes) == {"team-aws", "team-gcp"}
    assert planes["team-aws"].description == "the data platform's control plane"
    assert main(["remote", "add", "nope", "--from", str(handed)]) == 2
    assert "has no table [nope] (it has: team-aws, team-gcp)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a\n", "is not TOML"),
        ('[a]\ntype = "ftp"\n', "[a] type: type must be one of: controlplane"),
        ('[a]\ntype = "controlplane"\ncloud = "aws"\n', "[a] requests_queue: Field required"),
        (
            f'[a]\ntype = "controlplane"\ncloud = "mars"\nrequests_queue = "{QUEUE}"\n'
            'manifest = "dynamodb://T"\n',
            "[a] cloud: Input should be 'aws', 'gcp' or 'azure'",
        ),
        (
            '[a]\ntype = "controlplane"\ncloud = "aws"\nrequests_queue = "my-queue"\n'
            'manifest = "dynamodb://T"\n',
            "[a] requests_queue: 'my-queue' is not a URI",
        ),
        (
            f'[a]\ntype = "controlplane"\ncloud = "aws"\nrequests_queue = "{QUEUE}"\n'
            'manifest = "dynamodb://T"\nsecret = 1\n',
            "[a] secret: Extra inputs are not permitted",
        ),
        ('["bad name"]\ntype = "controlplane"\n', "bad remote name 'bad name'"),
    ],
)
def test_a_bad_remotes_file_is_one_line_naming_the_table(
    skyhop_home: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    skyhop_home.mkdir(parents=True, exist_ok=True)
    (skyhop_home / "remotes.toml").write_text(text)
    assert main(["remote", "list"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_on_finds_a_profile_by_name_or_by_cloud() -> None:
    with pytest.raises(
        NotFoundError, match=r"no aws control plane: deploy one with `skyhop deploy aws`"
    ):
        remotes.find_control_plane("aws")
    one = ControlPlaneProfile(cloud="aws", requests_queue=QUEUE, manifest="dynamodb://T")
    remotes.add_remote("prod", one)
    assert remotes.find_control_plane("aws") == ("prod", one)
    assert remotes.find_control_plane("prod") == ("prod", one)
    remotes.add_remote("staging", one)
    with pytest.raises(UsageError, match=r"several aws control planes \(prod, staging\)"):
        remotes.find_control_plane("aws")
    with pytest.raises(NotFoundError, match=r"no control plane 'other' \(known: prod, staging\)"):
        remotes.find_control_plane("other")
    with pytest.raises(NotFoundError, match="no gcp control plane"):
        remotes.find_control_plane("gcp")


def test_open_manifest_by_uri(tmp_path: Path) -> None:
    store = open_manifest(f"sqlite://{tmp_path}/m.db")
    assert store.list_jobs() == []
    for uri, message in [
        ("sqlite://relative.db", "expected sqlite:///ABSOLUTE/PATH"),
        ("dynamodb://", "expected dynamodb://TABLE"),
        ("firestore://p", "expected firestore://PROJECT/DATABASE/COLLECTION"),
        ("aztable://acct", "expected aztable://ACCOUNT/TABLE"),
        (
            "mongo://x",
            "unknown manifest 'mongo://x': use aztable://, dynamodb://, firestore://, sqlite://",
        ),
        ("nothing", "unknown manifest"),
    ]:
        with pytest.raises(UsageError, match=message):
            open_manifest(uri)
