"""A Hugging Face Hub cache laid out on disk, as `huggingface_hub` writes one, and a stand-in
for the Hub's API that records what a push sends: the hub tests run without a network."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace


def add_snapshot(cache: Path, repo_id: str, files: Path, revision: str = "main") -> Path:
    """Put the files of the folder `files` into `cache` as the snapshot of `repo_id` at
    `revision` (refs/<revision> -> a commit hash, snapshots/<hash>/...); its folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


class RecordingHub:
    """`HfApi` as far as a push uses it: `create_repo` and `upload_folder` are recorded, and
    the uploaded files kept (relative path -> bytes), as the Hub would hold them."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.repos: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.tokens: list[str | None] = []

    def __call__(self, token=None, **_):  # stands in for the class: HfApi(token=...)
        self.tokens.append(token)
        return self

    def create_repo(self, repo_id, **options):
        if self.fail is not None:
            raise self.fail
        self.repos.append({"repo_id": repo_id, **options})
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, **_):
        root = Path(folder_path)
        self.files = {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

    def materialise(self, folder: Path) -> Path:
        """The uploaded files written out as a folder (what a download of the repo gives)."""
        for name, content in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        return folder
