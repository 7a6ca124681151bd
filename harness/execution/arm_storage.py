"""Where an arm's checkpoints outlive the node that wrote them (`executor.storage`).

A Ray arm runs in a scratch folder on whichever node Ray picked; when that node dies its checkpoints
die with it. With `executor.storage` set (a path every node sees, such as NFS, or an object-store
URI such as s3://bucket/prefix or gs://..., read and written through pyarrow.fs, which the stack
already carries), the node copies each checkpoint there as it appears, and the next attempt of the
arm, on any node, starts from the newest one. Layout, per arm hash:

    <storage>/<arm hash>/checkpoints/step-00000020.pt   the newest KEEP, complete or absent
    <storage>/<arm hash>/attempts/1, 2, ...             one empty file per attempt that started

A checkpoint is uploaded under a hidden temporary name and then moved to its own (a rename on a
path; on an object store an object appears only once its upload has completed), so a reader sees
whole checkpoints only; a temporary left by a killed upload is deleted by the next attempt.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from harness.training.checkpoint import KEEP

CHECKPOINT_NAME = re.compile(r"step-\d{8}\.pt")
CHUNK = 8 << 20


def resolve_location(location: str, base: Path) -> str:
    """A URI as given; a relative path against `base` (the experiment file's folder), made absolute
    because the arms run elsewhere."""
    if "://" in location:
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


class ArmStorage:
    def __init__(self, location: str):
        import pyarrow.fs as pafs

        self._fs_types = pafs.FileType
        self._selector = pafs.FileSelector
        if "://" in location:
            self.fs, root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, root = pafs.LocalFileSystem(), location
        self.location, self.root = location, root.rstrip("/")

    def _folder(self, arm_hash: str, what: str) -> str:
        return f"{self.root}/{arm_hash}/{what}"

    def _names(self, folder: str) -> list[str]:
        infos = self.fs.get_file_info(self._selector(folder, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == self._fs_types.File)

    def checkpoints(self, arm_hash: str) -> list[str]:
        """Names of the complete stored checkpoints of the arm, oldest first."""
        return [n for n in self._names(self._folder(arm_hash, "checkpoints")) if CHECKPOINT_NAME.fullmatch(n)]

    def upload(self, arm_hash: str, local: Path) -> None:
        """Store one checkpoint file (complete or not at all), then prune all but the newest KEEP."""
        folder = self._folder(arm_hash, "checkpoints")
        self.fs.create_dir(folder, recursive=True)
        partial = f"{folder}/.{local.name}.{uuid.uuid4().hex}.tmp"
        try:
            with local.open("rb") as source, self.fs.open_output_stream(partial) as target:
                shutil.copyfileobj(source, target, CHUNK)
            self.fs.move(partial, f"{folder}/{local.name}")
        except BaseException:
            self._delete(partial)
            raise
        for old in self.checkpoints(arm_hash)[:-KEEP]:
            self._delete(f"{folder}/{old}")

    def download(self, arm_hash: str, folder: Path) -> int | None:
        """Copy the newest stored checkpoint into `folder`, where the training loop looks for it (one
        only: stored checkpoints are complete, and a full fine-tune's is as large as its model).
        Returns its step, or None. Also deletes temporaries that a killed upload left behind."""
        stored = self._folder(arm_hash, "checkpoints")
        for name in self._names(stored):
            if name.startswith(".") and name.endswith(".tmp"):
                self._delete(f"{stored}/{name}")
        names = self.checkpoints(arm_hash)
        if not names:
            return None
        newest = names[-1]
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{newest}.download"
        with self.fs.open_input_stream(f"{stored}/{newest}") as source, partial.open("wb") as target:
            shutil.copyfileobj(source, target, CHUNK)
        os.replace(partial, folder / newest)
        return int(newest[len("step-") : -len(".pt")])

    def start_attempt(self, arm_hash: str) -> int:
        """Record that an attempt of the arm starts; returns its number (1 for the first). One
        attempt of an arm runs at a time, so counting the files is enough."""
        folder = self._folder(arm_hash, "attempts")
        self.fs.create_dir(folder, recursive=True)
        number = len(self._names(folder)) + 1
        with self.fs.open_output_stream(f"{folder}/{number}"):
            pass
        return number

    def clear(self, arm_hash: str) -> None:
        """A finished arm keeps nothing here: its result is what a rerun reuses."""
        info = self.fs.get_file_info(f"{self.root}/{arm_hash}")
        if info.type == self._fs_types.Directory:
            self.fs.delete_dir(f"{self.root}/{arm_hash}")

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass
