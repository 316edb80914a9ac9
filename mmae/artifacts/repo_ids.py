"""Finding an export by its Hugging Face Hub repo id (`load_encoder("org/name")`).

`huggingface_hub` (installed with transformers) downloads the repo's snapshot or reads it from
its cache (`HF_HOME` / `HF_HUB_CACHE`; `HF_HUB_OFFLINE=1` reads only the cache). What comes
back is loaded with the same checks as a local folder: the weights' SHA-256, safetensors only,
and classes outside mmae only with `trust_code`.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmae.core.errors import ArtifactError, ConfigError

#: `org/name` (or `name`), as the Hub spells repo ids.
REPO_ID = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")


def looks_like_repo_id(reference: str) -> bool:
    return bool(REPO_ID.match(reference)) and not reference.endswith((".", "-")) and ".." not in reference


def resolve_export(reference: str | Path, revision: str | None = None) -> Path:
    """The local folder of an export: `reference` itself when it is a directory, else the
    snapshot of the Hub repo it names (downloaded, or read from the cache)."""
    path = Path(reference)
    if path.exists() or not looks_like_repo_id(str(reference)):
        if revision is not None:
            raise ConfigError(f"revision={revision} is for a Hub repo id; {path} is a local path")
        return path  # (load_encoder reports a missing folder, naming it)
    return _download(str(reference), revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, errors, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # (a partly downloaded snapshot: its own error in recent huggingface_hub, none before)
    incomplete = getattr(errors, "IncompleteSnapshotError", ())

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id, revision=revision, library_name="mmae"))
    except RevisionNotFoundError:
        raise ArtifactError(f"{at}: the Hub repo has no revision '{revision}'") from None
    except GatedRepoError:
        raise ArtifactError(f"{at}: the Hub repo is gated: accept its terms on the Hub, then log in "
                            "(hf auth login or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ArtifactError(f"no export directory at {repo_id}, and no Hub model repo {repo_id} (or it is "
                            "private: log in with hf auth login or HF_TOKEN)") from None
    except incomplete as error:
        raise ArtifactError(f"{at}: {first_line(error)}") from None
    except LocalEntryNotFoundError:
        asked = ("HF_HUB_OFFLINE=1: the Hub is not asked" if constants.HF_HUB_OFFLINE
                 else "and the Hub cannot be reached")
        raise ArtifactError(f"no export directory at {repo_id}; as a Hub repo id, {at} is not in the "
                            f"local cache ({constants.HF_HUB_CACHE}; {asked})") from None
    except HfHubHTTPError as error:
        raise ArtifactError(f"{at}: the Hub answered {first_line(error)}") from None
    except OSError as error:  # no network, a full disk
        raise ArtifactError(f"{at}: cannot download from the Hub: {first_line(error)}") from None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
