"""`serveops propose --forge`: the pushed proposal becomes a pull request, opened once, against
a fake forge (a local HTTP server speaking GitHub's pulls API) with a real Git repository, a
real bare remote and a real MLflow SQLite store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.errors import BadInput
from controller.monitor.forge import Forge
from tests.support import deployment_yaml, git, make_repo

PATH = "deployments/staging/fraud.yaml"
TOKEN = "tok-s3cret-value"


@dataclass
class FakeForge:
    """Open pull requests by head, and every request seen; `fail` answers each call with a
    status and body instead."""

    url: str = ""
    pulls: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    fail: tuple[int, bytes] | None = None


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    state = FakeForge()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            state.seen.append(("GET", url.path, dict(self.headers), parse_qs(url.query)))
            if state.fail is not None:
                return self._answer(*state.fail)
            head = parse_qs(url.query)["head"][0].split(":", 1)[1]
            found = [p for p in state.pulls if p["head"] == head]
            self._answer(200, json.dumps(found).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append(("POST", self.path, dict(self.headers), body))
            if state.fail is not None:
                return self._answer(*state.fail)
            number = len(state.pulls) + 1
            pull = {**body, "number": number, "html_url": f"https://forge/pull/{number}"}
            state.pulls.append(pull)
            self._answer(201, json.dumps(pull).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `fraud`, versions 1 and 2."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("fraud")
    client.create_model_version("fraud", "file:///m/1")
    client.create_model_version("fraud", "file:///m/2")
    return uri


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    make_repo(path, {PATH: deployment_yaml(model="models:/fraud/1")})
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(path, "remote", "add", "origin", str(remote))
    return path


def propose(registry: str, repo: Path, forge: FakeForge, *extra: str, token: bool = True) -> Any:
    args = [
        "propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry,
        "--push", "origin", "--forge", "github:acme/deploys", "--forge-api", forge.url, *extra,
    ]  # fmt: skip
    env = {"GITHUB_TOKEN": TOKEN if token else ""}
    return CliRunner().invoke(app, args, env=env)


def test_a_pushed_proposal_opens_one_pull_request_and_reuses_it(
    registry: str, repo: Path, forge: FakeForge
) -> None:
    result = propose(registry, repo, forge, "-o", "json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["pull_request"] == {"number": 1, "url": "https://forge/pull/1", "created": True}
    [pull] = forge.pulls
    assert pull["head"] == "serveops/propose/staging/fraud-v2"
    assert pull["base"] == "main"
    assert pull["title"] == "staging/fraud: propose model v2 (serving v1)"
    assert "models:/fraud/1 -> models:/fraud/2" in pull["body"]
    assert pull["maintainer_can_modify"] is False
    method, path, headers, query = forge.seen[0]
    assert (method, path) == ("GET", "/repos/acme/deploys/pulls")
    assert query == {
        "head": ["acme:serveops/propose/staging/fraud-v2"],
        "base": ["main"],
        "state": ["open"],
    }
    assert headers["Authorization"] == f"Bearer {TOKEN}"

    again = propose(registry, repo, forge)  # run again: the same branch, the same pull request
    assert again.exit_code == 0, again.output
    assert "pull request #1 already open: https://forge/pull/1" in again.output
    assert [m for m, *_ in forge.seen] == ["GET", "POST", "GET"]  # no second POST
    assert len(forge.pulls) == 1


def test_a_forge_refusal_says_the_branch_is_pushed_and_never_shows_the_token(
    registry: str, repo: Path, forge: FakeForge
) -> None:
    forge.fail = (422, b'{"message": "Validation Failed", "token": "' + TOKEN.encode() + b'"}')
    result = propose(registry, repo, forge)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "is pushed" in text
    assert "serveops/propose/staging/fraud-v2" in text
    assert "HTTP 422" in text
    assert TOKEN not in result.output
    remote = repo.parent / "remote.git"
    assert git(remote, "branch", "--list", "serveops/*").strip()  # the branch went out


def test_an_oversized_answer_is_cut_off_not_read_whole(
    registry: str, repo: Path, forge: FakeForge
) -> None:
    forge.fail = (200, b"[" + b'{"number": 1},' * 200_000 + b"{}]")  # ~2.8 MB
    result = propose(registry, repo, forge)
    assert result.exit_code == 1, result.output
    assert "answer over" in " ".join(result.output.split())


def test_forge_needs_a_token_and_a_push(registry: str, repo: Path, forge: FakeForge) -> None:
    result = propose(registry, repo, forge, token=False)
    assert result.exit_code == 2, result.output
    assert "$GITHUB_TOKEN is not set" in result.output
    assert forge.seen == []
    assert git(repo, "branch", "--list", "serveops/*") == ""  # refused before writing
    args = ["propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri"]
    result = CliRunner().invoke(app, [*args, registry, "--forge", "github:acme/deploys"])
    assert result.exit_code == 2
    assert "pass --push too" in result.output
    assert git(repo, "branch", "--list", "serveops/*") == ""  # refused before writing


@pytest.mark.parametrize(
    ("value", "api", "env"),
    [
        ("gitlab:acme/deploys", "https://api.github.com", "T"),
        ("github:acme", "https://api.github.com", "T"),
        ("github:acme/deploys/x", "https://api.github.com", "T"),
        ("github:acme/deploys", "file:///etc/passwd", "T"),
        ("github:acme/deploys", "https://api.github.com", "NOT-A-NAME"),
    ],
)
def test_bad_forge_settings_are_refused(value: str, api: str, env: str) -> None:
    with pytest.raises(BadInput):
        Forge.parse(value, api, env)
