"""Adapter packages on the Hugging Face Hub: `resolve` turns "hf://org/name[@revision]" into a local snapshot,
`push` uploads a verified package. Both are thin calls into huggingface_hub: its cache, its offline mode
(HF_HUB_OFFLINE=1), its token lookup (HF_TOKEN or `hf auth login`). crossrec-peft never writes a token.
`offline_snapshot` is the one check made before a library (transformers, open_clip) fetches backbone weights
by Hub id, so that an unreachable Hub fails in seconds instead of after minutes of retries.

Everything before the network call (which package, which files) is decided and checked here, so it can be
tested without the Hub; see docs/hub.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .errors import ConfigError, PackageError

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
        # snapshot_download asks the Hub for the repo's file list once, without retries, and falls back to the
        # cache when that fails: an unreachable Hub costs one failed connection here, not a retry loop.
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=PACKAGE_PATTERNS))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise PackageError(f"{text}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    except LocalEntryNotFoundError as exc:
        # huggingface_hub keeps the network error it fell back from as the cause (or context) of this one.
        network = exc.__cause__ or exc.__context__
        reason = f"{type(network).__name__}: {str(network).splitlines()[0]}" if network else str(exc).splitlines()[0]
        raise PackageError(unreachable_message(text, repo_id, reason)) from None
    except (HfHubHTTPError, OSError) as exc:
        raise PackageError(f"{text}: cannot download from the Hub: {str(exc).splitlines()[0]}") from None


def unreachable_message(what: str, repo_id: str, reason: str) -> str:
    """The one message for "not in the local cache and the Hub gives nothing", for packages and backbones."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return (
            f"{what}: '{repo_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
            "is set, so the Hub was not asked. Unset HF_HUB_OFFLINE to download it, or pass a local directory."
        )
    return (
        f"{what}: the Hugging Face Hub ({constants.ENDPOINT}) could not be reached ({reason}) and '{repo_id}' is not "
        f"in the local Hugging Face cache ({constants.HF_HUB_CACHE}). Download it once with network access (or copy "
        "that cache here), or pass a local directory; with HF_HUB_OFFLINE=1 only the local cache is read and the "
        "network is never tried."
    )


def offline_snapshot(repo_id: str, *, what: str, files: Sequence[str], revision: str | None = None) -> Path | None:
    """Before a library downloads `files` of the Hub model repo `repo_id`: None when it may go on as usual
    (the Hub answers, with any HTTP status: a missing repo is the library's error to report; or
    HF_HUB_OFFLINE=1 is set and one of `files` is cached, which the library then reads itself; or `repo_id` is
    no Hub id but a path the library reports itself). When the Hub cannot be reached: the cached snapshot's
    directory if one of `files` is in the local cache. A ConfigError naming `repo_id` when it can be neither
    downloaded nor read from the cache.

    Why ask first: huggingface_hub retries a failed download with backoff (1+2+4+8+8 s) whenever the file is
    not cached, for every file a library tries (transformers tries several optional ones, open_clip a
    safetensors file and then a .bin), so an unreachable Hub meant 30 s to minutes before any error, even for
    a model in the cache. huggingface_hub's get_hf_file_metadata is one HEAD request without retries (its
    HF_HUB_ETAG_TIMEOUT bounds a silent network), the same request each download starts with."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None

    def cached() -> bool:
        return any(isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in files)

    if constants.HF_HUB_OFFLINE:
        if cached():
            return None
        raise ConfigError(unreachable_message(what, repo_id, "HF_HUB_OFFLINE=1"))
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, files[0], revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT)
        return None
    except HfHubHTTPError:
        return None  # the Hub answered: 404, 401, gated... the library's own error says which
    except Exception as exc:  # noqa: BLE001
        # No HTTP answer at all (refused, no DNS, timeout, proxy; OfflineModeIsEnabled): the cases huggingface_hub
        # itself falls back to the cache on. Caught whole because the transport's error types are those of
        # whichever HTTP client the installed huggingface_hub uses (requests, httpx, ...); the reason is shown.
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}"
    if cached():
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    raise ConfigError(unreachable_message(what, repo_id, reason))


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
