"""Upload an exported folder (data and dataset card) to the Hugging Face Hub, only when credentials exist."""

from __future__ import annotations

from pathlib import Path

from distillery.ops.exporting import ExportError


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the dataset repo if needed and upload `folder` as one commit; returns the repo's URL."""
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError:
        raise ExportError("--push-to-hub needs huggingface_hub: pip install 'distillery[handoff]'") from None
    if get_token() is None:
        raise ExportError("no Hugging Face credentials: set HF_TOKEN or run `hf auth login`, then push again; "
                          f"the export itself is complete in {folder}")
    api = HfApi()
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                      commit_message="distillery export (data and dataset card)")
    return str(url)
