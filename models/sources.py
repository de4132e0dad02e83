"""Where the built-in datasets' standard files are looked for (no torch: the API checks them
before accepting a job)."""

from __future__ import annotations

from pathlib import Path

# source -> (sub-directories tried under the given root, the file that marks the layout)
BUILTIN_LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "cifar10": (("", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"), "data_batch_1"),
    "stl10": (("", "stl10_binary", "stl10/stl10_binary"), "train_X.bin"),
}


def builtin_candidates(source: str, root: Path | str) -> list[Path]:
    """Every marker file that would make `root` hold the standard files of `source`."""
    subdirs, marker = BUILTIN_LAYOUTS[source]
    return [Path(root) / sub / marker for sub in subdirs]


def find_builtin(source: str, root: Path | str) -> Path | None:
    """The directory holding `source`'s standard files, or None."""
    for path in builtin_candidates(source, root):
        if path.exists():
            return path.parent
    return None
