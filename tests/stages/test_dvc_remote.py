"""DVC remotes with the pipeline: after a full `dvc repro`, `dvc push` to a remote; a fresh
`git clone` then `dvc pull`s every output, and `dvc status` / `dvc repro` find nothing to do.

Against a real S3 API (moto's server on 127.0.0.1, started and stopped here; `dvc-s3` is the
optional extra `.[s3]`, moto is in `.[dev]`) with the endpoint in the committed .dvc/config
and the credentials only in the git-ignored .dvc/config.local; and against a local folder.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.dvcrepo import run
from helpers.tinydvc import ALL_STAGES, ran_stages, tiny_project

# Every output the DAG writes: a clone that pulled has each file, byte for byte.
OUTPUTS = ("data/raw", "data/shards", "models", "reports")
# No shared or per-user AWS settings of the machine running the tests: the remote's
# credentials come from .dvc/config.local alone (and no instance-metadata lookups).
NO_AWS_FILES = {
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny pipeline, run in full and committed."""
    root = tiny_project(tmp_path_factory.mktemp("remote"))
    first = run(root, "dvc", "repro")
    assert ran_stages(first.stdout) == ALL_STAGES
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "first run")
    return root


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    key_id: str
    secret: str


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free port of 127.0.0.1 with one bucket, and a key pair (moto
    accepts any; these are unique so a leak into a committed file is found)."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 not installed (pip install -e '.[s3]')")
    server_module = pytest.importorskip(
        "moto.server", reason="moto's server not installed (pip install -e '.[dev]')"
    )
    boto3 = pytest.importorskip("boto3", reason="boto3 not installed (comes with dvc-s3)")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        found = S3(
            f"http://{host}:{port}",
            "gptpipe-test",
            f"KEY{secrets.token_hex(8).upper()}",
            secrets.token_urlsafe(30),
        )
        client = boto3.client(
            "s3",
            endpoint_url=found.endpoint,
            aws_access_key_id=found.key_id,
            aws_secret_access_key=found.secret,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=found.bucket)
        yield found
    finally:
        server.stop()


def _files(root: Path) -> dict[str, bytes]:
    """The pipeline's outputs under `root`: relative path -> content."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for name in OUTPUTS
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and path.name != ".gitignore"
    }


def _clone_pulls_and_finds_nothing_to_do(
    project: Path, clone: Path, remote_args: tuple[str, ...] = (), **env: str
) -> None:
    """`dvc pull` in `clone` (already configured) brings every output back as it was, and
    neither `dvc status` nor `dvc repro` finds anything to do."""
    assert not (clone / "models" / "pretrain").exists()  # (models/.gitignore is in git)
    run(clone, "dvc", "pull", *remote_args, **env)
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status").stdout
    again = run(clone, "dvc", "repro", **env)
    assert ran_stages(again.stdout) == set(), again.stdout
    assert run(clone, "git", "status", "--porcelain").stdout == ""  # dvc.lock unchanged
    want = _files(project)
    assert len(want) > 20 and _files(clone) == want


def test_an_s3_remote_pushes_and_a_fresh_clone_pulls_with_credentials_kept_local(
    s3, project, tmp_path
):  # s3 first: without dvc-s3 or moto it skips before the pipeline runs
    run(project, "dvc", "remote", "add", "-d", "store", f"s3://{s3.bucket}/dvc-cache")
    run(project, "dvc", "remote", "modify", "store", "endpointurl", s3.endpoint)
    for option, value in (("access_key_id", s3.key_id), ("secret_access_key", s3.secret)):
        run(project, "dvc", "remote", "modify", "--local", "store", option, value)
    run(project, "git", "add", ".dvc/config")
    run(project, "git", "commit", "-qm", "an S3 remote")
    pushed = run(project, "dvc", "push", **NO_AWS_FILES)
    assert "files pushed" in pushed.stdout, pushed.stdout

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / ".dvc" / "config.local").exists()
    config = (clone / ".dvc" / "config").read_text()
    assert s3.endpoint in config and s3.key_id not in config and s3.secret not in config
    for option, value in (("access_key_id", s3.key_id), ("secret_access_key", s3.secret)):
        run(clone, "dvc", "remote", "modify", "--local", "store", option, value)
    _clone_pulls_and_finds_nothing_to_do(project, clone, **NO_AWS_FILES)

    # the credentials are in no commit of either repository, and config.local is ignored
    for repo in (project, clone):
        assert s3.secret in (repo / ".dvc" / "config.local").read_text()
        run(repo, "git", "check-ignore", "-q", ".dvc/config.local")
        revisions = run(repo, "git", "rev-list", "--all").stdout.split()
        for secret in (s3.key_id, s3.secret):
            found = run(repo, "git", "grep", "-F", "-e", secret, *revisions, check=False)
            assert found.returncode == 1 and found.stdout == "", found.stdout


@pytest.mark.slow  # the S3 test above is the one of this kind that CI runs
def test_a_local_folder_remote_pushes_and_a_fresh_clone_pulls(project, tmp_path):
    store = tmp_path / "shared" / "dvc-store"
    run(project, "dvc", "remote", "add", "folder", str(store))
    run(project, "git", "add", ".dvc/config")
    run(project, "git", "commit", "-qm", "a folder remote")
    run(project, "dvc", "push", "-r", "folder")
    assert any(path.is_file() for path in store.rglob("*"))

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    _clone_pulls_and_finds_nothing_to_do(project, clone, ("-r", "folder"))
