"""Where an arm's checkpoints outlive the node that wrote them (`executor.storage`).

A Ray arm runs in a scratch folder on whichever node Ray picked; when that node dies its checkpoints
die with it. With `executor.storage` set (a path every node sees, such as NFS, or an object-store
URI such as s3://bucket/prefix or gs://..., read and written through pyarrow.fs, which the stack
already carries), the node copies each checkpoint there as it appears, and the next attempt of the
arm, on any node, starts from the newest one. Layout, per arm hash:

    <storage>/<arm hash>/checkpoints/step-00000020.pt   the newest KEEP, complete or absent
    <storage>/<arm hash>/checkpoints/step-00000020/     an FSDP arm's (DCP) checkpoint: its files,
                                                        then COMPLETE, written last
    <storage>/<arm hash>/attempts/1, 2, ...             one empty file per attempt that started

A checkpoint file is uploaded under a hidden temporary name and then moved to its own (a rename on a
path; on an object store an object appears only once its upload has completed), so a reader sees
whole checkpoints only. A folder cannot be renamed on an object store, so there an FSDP checkpoint
is uploaded file by file under its own name and made visible by a COMPLETE marker uploaded after
the last of them: readers (`checkpoints`, `download`) see marked folders only. On a path the folder
is uploaded under a hidden name, marked, and renamed, so any folder of a checkpoint's name there is
complete, marked or not. A temporary (or, on an object store, an unmarked folder) left by a killed
upload is deleted by the next attempt (`sweep`).

An FSDP arm over several nodes does not go through the upload: every rank must read and write the
same checkpoint folder, so its ranks checkpoint straight into `checkpoint_folder(...)`, which needs a
storage that is a path every node sees (harness.execution.ray_task). Those folders are complete by
the rename of harness.training.sharded_checkpoint (without a marker), so an arm whose `nodes`
changes between a killed run and its rerun still finds them.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from harness.training.checkpoint import KEEP

CHECKPOINT_NAME = re.compile(r"step-\d{8}\.pt")  # one file (harness.training.checkpoint)
FOLDER_NAME = re.compile(r"step-\d{8}")  # a DCP folder (harness.training.sharded_checkpoint)
COMPLETE = "COMPLETE"  # the last object of a stored folder: before it is there, the folder is not
CHUNK = 8 << 20


def step_of(name: str) -> int:
    return int(name[len("step-") : len("step-") + 8])


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_location(location: str, base: Path) -> str:
    """A URI as given; a relative path against `base` (the experiment file's folder), made absolute
    because the arms run elsewhere."""
    if is_uri(location):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


class ArmStorage:
    def __init__(self, location: str):
        import pyarrow.fs as pafs

        self._fs_types = pafs.FileType
        self._selector = pafs.FileSelector
        if is_uri(location):
            self.fs, root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, root = pafs.LocalFileSystem(), location
        self.location, self.root = location, root.rstrip("/")
        self.renames = not is_uri(location)  # a folder can be renamed (a path), or not (an object store)

    def _folder(self, arm_hash: str, what: str) -> str:
        return f"{self.root}/{arm_hash}/{what}"

    def checkpoint_folder(self, arm_hash: str) -> str:
        """Where the arm's checkpoints are stored (on a path storage, a folder of this filesystem)."""
        return self._folder(arm_hash, "checkpoints")

    def _entries(self, folder: str) -> dict[str, bool]:
        """Names in `folder` (not below it), each with whether it is a folder."""
        infos = self.fs.get_file_info(self._selector(folder, allow_not_found=True))
        kinds = (self._fs_types.File, self._fs_types.Directory)
        return {i.base_name: i.type == self._fs_types.Directory for i in infos if i.type in kinds}

    def _names(self, folder: str) -> list[str]:
        return sorted(name for name, is_dir in self._entries(folder).items() if not is_dir)

    def _complete(self, folder: str) -> bool:
        """On a path a folder of a checkpoint's name is there only once whole (renamed); on an
        object store once its marker is."""
        return self.renames or self.fs.get_file_info(f"{folder}/{COMPLETE}").type == self._fs_types.File

    def checkpoints(self, arm_hash: str) -> list[str]:
        """Names of the complete stored checkpoints of the arm (files, and folders with their
        COMPLETE marker), oldest first."""
        stored = self.checkpoint_folder(arm_hash)
        return sorted(
            name
            for name, is_dir in self._entries(stored).items()
            if (CHECKPOINT_NAME.fullmatch(name) and not is_dir)
            or (FOLDER_NAME.fullmatch(name) and is_dir and self._complete(f"{stored}/{name}"))
        )

    def upload(self, arm_hash: str, local: Path) -> None:
        """Store one checkpoint, a file or a DCP folder (complete or invisible), then prune all but
        the newest KEEP."""
        folder = self.checkpoint_folder(arm_hash)
        self.fs.create_dir(folder, recursive=True)
        if local.is_dir():
            self._upload_folder(local, f"{folder}/{local.name}")
        else:
            self._upload_file(local, folder)
        for old in self.checkpoints(arm_hash)[:-KEEP]:
            self._delete(f"{folder}/{old}")

    def _upload_file(self, local: Path, folder: str) -> None:
        partial = f"{folder}/.{local.name}.{uuid.uuid4().hex}.tmp"
        try:
            self._copy_up(local, partial)
            self.fs.move(partial, f"{folder}/{local.name}")
        except BaseException:
            self._delete(partial)
            raise

    def _upload_folder(self, local: Path, target: str) -> None:
        """Every file of the folder, then the marker; on a path all of it under a hidden name first,
        then renamed. A folder left unmarked by an earlier, killed upload is replaced."""
        folder, name = target.rsplit("/", 1)
        partial = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp" if self.renames else target
        self._delete(target)
        try:
            self.fs.create_dir(partial, recursive=True)
            files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != COMPLETE)
            for path in files:
                relative = path.relative_to(local).as_posix()
                if "/" in relative:
                    self.fs.create_dir(f"{partial}/{relative.rsplit('/', 1)[0]}", recursive=True)
                self._copy_up(path, f"{partial}/{relative}")
            with self.fs.open_output_stream(f"{partial}/{COMPLETE}"):
                pass
            if partial != target:
                self.fs.move(partial, target)
        except BaseException:
            self._delete(partial)
            raise

    def _copy_up(self, local: Path, remote: str) -> None:
        with local.open("rb") as source, self.fs.open_output_stream(remote) as target:
            shutil.copyfileobj(source, target, CHUNK)

    def sweep(self, arm_hash: str) -> None:
        """Delete what killed uploads or writes left: hidden temporaries, and on an object store
        stored folders without their COMPLETE marker. Run when an attempt starts, before anything
        writes."""
        stored = self.checkpoint_folder(arm_hash)
        for name, is_dir in self._entries(stored).items():
            torn = is_dir and FOLDER_NAME.fullmatch(name) and not self._complete(f"{stored}/{name}")
            if name.startswith(".") or torn:
                self._delete(f"{stored}/{name}")

    def download(self, arm_hash: str, folder: Path) -> int | None:
        """Copy the newest stored checkpoint into `folder`, where the training loop looks for it (one
        only: stored checkpoints are complete, and a full fine-tune's is as large as its model); a
        DCP folder arrives under a hidden name and is renamed when whole. Returns its step, or None.
        Also deletes what a killed upload left behind (`sweep`)."""
        self.sweep(arm_hash)
        names = self.checkpoints(arm_hash)
        if not names:
            return None
        newest = names[-1]
        stored = f"{self.checkpoint_folder(arm_hash)}/{newest}"
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{newest}.download"
        if self._entries(self.checkpoint_folder(arm_hash))[newest]:
            shutil.rmtree(partial, ignore_errors=True)
            infos = self.fs.get_file_info(self._selector(stored, recursive=True))
            for info in infos:
                if info.type != self._fs_types.File or info.path.endswith(f"/{COMPLETE}"):
                    continue
                local = partial / info.path[len(stored) + 1 :]
                local.parent.mkdir(parents=True, exist_ok=True)
                self._copy_down(info.path, local)
            shutil.rmtree(folder / newest, ignore_errors=True)
        else:
            self._copy_down(stored, partial)
        os.replace(partial, folder / newest)
        return step_of(newest)

    def _copy_down(self, remote: str, local: Path) -> None:
        with self.fs.open_input_stream(remote) as source, local.open("wb") as target:
            shutil.copyfileobj(source, target, CHUNK)

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
        """Delete a stored file or folder, if it is there."""
        try:
            if self.fs.get_file_info(path).type == self._fs_types.Directory:
                self.fs.delete_dir(path)
            else:
                self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass
