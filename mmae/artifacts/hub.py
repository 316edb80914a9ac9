"""Sharing an export on the Hugging Face Hub: `push_to_hub` and `mmae-export --push-to-hub`.

`huggingface_hub` (installed with transformers) does the transfer, with the usual token:
`HF_TOKEN`, or the one `hf auth login` saved. Loading by repo id: `mmae.artifacts.repo_ids`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mmae.artifacts.export import check_export
from mmae.artifacts.model_card import CARD, card_for_hub, write_card
from mmae.artifacts.repo_ids import first_line, looks_like_repo_id
from mmae.core.errors import ArtifactError, ConfigError


def push_to_hub(encoder_dir: str | Path, repo_id: str, private: bool = False, license: str | None = None,
                datasets: Iterable[str] = (), commit_message: str | None = None,
                token: str | None = None) -> str:
    """Upload an export to the Hub model repo `repo_id` (created if needed; `private` for a
    new one) with its model card, and return the commit's URL. The export is checked first (it
    must load, hash and config intact); the card loads by `repo_id` and carries `license` and
    `datasets` when given. The token: `token`, else `HF_TOKEN` or `hf auth login`'s."""
    from huggingface_hub import HfApi, get_token

    folder = Path(encoder_dir)
    if not looks_like_repo_id(repo_id) or "/" not in repo_id:
        raise ConfigError(f"'{repo_id}' is not a Hub repo id: ORG/NAME, of letters, digits, '-', '_' and '.'")
    check_export(folder)
    token = token or get_token()
    if not token:
        raise ConfigError(f"pushing to {repo_id} needs a Hugging Face token with write access: run "
                          "`hf auth login`, or set HF_TOKEN")
    api = HfApi(token=token, library_name="mmae")
    with tempfile.TemporaryDirectory(prefix="mmae-push-") as staging:
        upload = Path(staging) / "export"
        shutil.copytree(folder, upload)
        if not (upload / CARD).is_file():
            write_card(upload)
        card = (upload / CARD).read_text(encoding="utf-8")
        (upload / CARD).write_text(card_for_hub(card, repo_id, license, datasets), encoding="utf-8")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=repo_id, folder_path=upload, repo_type="model",
                                       commit_message=commit_message or "Upload an mmae encoder")
        except Exception as error:  # HTTP errors, no network: one line naming the repo
            raise ArtifactError(f"pushing {folder} to {repo_id} failed: {first_line(error)}") from None
    return str(getattr(commit, "commit_url", commit))
