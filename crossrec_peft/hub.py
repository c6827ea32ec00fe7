"""Adapter packages on the Hugging Face Hub: `resolve` turns "hf://org/name[@revision]" into a local snapshot,
`push` uploads a verified package. Both are thin calls into huggingface_hub: its cache, its offline mode
(HF_HUB_OFFLINE=1), its token lookup (HF_TOKEN or `hf auth login`). crossrec-peft never writes a token.

Everything before the network call (which package, which files) is decided and checked here, so it can be
tested without the Hub; see docs/hub.md.
"""

from __future__ import annotations

from pathlib import Path

from .errors import PackageError

SCHEME = "hf://"
# What a package can hold (docs/package-format.md). Anything else in a Hub repo (pickles above all) is
# never downloaded.
PACKAGE_PATTERNS = ["*.json", "*.safetensors", "*.md"]


def parse_uri(uri: str) -> tuple[str, str | None]:
    """"hf://org/name[@revision]" -> (repo id, revision or None)."""
    if not uri.startswith(SCHEME):
        raise PackageError(f"'{uri}' is not a Hub address; write hf://<org>/<name>[@revision].")
    rest = uri[len(SCHEME):]
    repo_id, _, revision = rest.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise PackageError(f"'{uri}' is not a valid Hub address; write hf://<org>/<name> or hf://<org>/<name>@<revision>.")
    return repo_id, revision or None


def resolve(path_or_uri: str | Path) -> Path:
    """A local directory for a package: local paths are returned as they are; "hf://org/name[@revision]" is
    fetched with huggingface_hub.snapshot_download into (or, with HF_HUB_OFFLINE=1, read from) the local
    Hugging Face cache. The result is not verified here: load it with crossrec_peft.package, which checks it."""
    text = str(path_or_uri)
    if not text.startswith(SCHEME):
        return Path(path_or_uri).expanduser()
    repo_id, revision = parse_uri(text)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=PACKAGE_PATTERNS))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise PackageError(f"{text}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    except LocalEntryNotFoundError as exc:
        from huggingface_hub import constants

        offline = " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise PackageError(
            f"{text}: not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub cannot be reached"
            f"{offline}. Download it once with network access, or pass a local directory. ({str(exc).splitlines()[0]})"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise PackageError(f"{text}: cannot download from the Hub: {str(exc).splitlines()[0]}") from None


def upload_plan(adapter_dir: str | Path) -> list[str]:
    """The files `push` uploads: the manifest and every file it lists, after the whole package is verified
    (format, sha256 of every file, no pickle files, no unlisted files but documentation). Unlisted
    documentation (*.md notes) stays local."""
    from .package import MANIFEST, verify_package

    directory = Path(adapter_dir)
    manifest = verify_package(directory)
    if "README.md" not in manifest.get("files", {}):
        raise PackageError(f"{directory}: has no model card (README.md); re-export it with this crossrec-peft before pushing.")
    return sorted([MANIFEST, *manifest["files"]])


def push(
    adapter_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a package to the Hub model repo `repo_id` (created if missing; `revision` is a branch, created
    from main if missing). Returns the commit URL. The token comes from huggingface_hub's usual lookup."""
    directory = Path(adapter_dir)
    files = upload_plan(directory)
    if len(repo_id.split("/")) != 2 or not all(repo_id.split("/")):
        raise PackageError(f"--repo-id '{repo_id}' must be <org>/<name>.")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    from .package import read_manifest

    message = commit_message or f"Upload crossrec-peft adapter {read_manifest(directory)['id']}"
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(directory), revision=revision, commit_message=message, allow_patterns=files
        )
    except OfflineModeIsEnabled:
        raise PackageError(f"Cannot push to '{repo_id}': HF_HUB_OFFLINE=1 is set; unset it to reach the Hub.") from None
    except Exception as exc:  # noqa: BLE001  auth, network and Hub errors: the environment, not a bug here
        raise PackageError(
            f"Cannot push to '{repo_id}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (log in with `hf auth login` or set HF_TOKEN)."
        ) from None
    return str(commit.commit_url)
