"""Installed model bundles: verify a bundle.tar, stage it, activate it, roll back (``maskgate model``).

Under ``<state_dir>/models/``: ``bundles/<id>/`` holds each installed bundle (``id``: the start of the
sha256 of its SHA256SUMS), and three symlinks name them: ``staged`` (installed, not in use),
``active`` (what the daemon loads; absent: the bundle shipped with maskgate) and ``previous``
(what ``rollback`` returns to; ``shipped`` for the shipped bundle). Each switch replaces a symlink
with ``os.replace``, so a reader sees the old target or the new one, never neither.

bundle.tar: ``SHA256SUMS`` (``sha256sum`` format) and the files it lists, at the top level:
``metadata.json``, ``classifier.tflite``, ``nose.tflite`` when the metadata has a nose check, and
optional extras (``reference.npz``, ``report.md``…). Nothing else is accepted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ModelError
from .classifier import METADATA_FILE, MaskClassifier, default_bundle_dir, model_files, read_metadata

SUMS = "SHA256SUMS"
SHIPPED = "shipped"
LINKS = ("active", "staged", "previous")
MAX_BUNDLE_BYTES = 200 * 1024 * 1024
MAX_FILES = 32
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def bundle_id(bundle_dir: str | Path) -> str:
    """A short name for a bundle: the start of the sha256 of its SHA256SUMS (or of its classifier)."""
    bundle_dir = Path(bundle_dir)
    source = bundle_dir / SUMS if (bundle_dir / SUMS).is_file() else bundle_dir / "classifier.tflite"
    try:
        return _sha256(source.read_bytes())[:12]
    except OSError:
        return "unknown"


def pack(bundle_dir: Path, out: Path) -> str:
    """Write ``bundle_dir``'s files with their SHA256SUMS to the tar ``out``; returns the tar's sha256."""
    read_metadata(bundle_dir)
    files = sorted(p for p in Path(bundle_dir).iterdir() if p.is_file() and p.name != SUMS and NAME.match(p.name))
    sums = "".join(f"{_sha256(p.read_bytes())}  {p.name}\n" for p in files).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in [(SUMS, sums)] + [(p.name, p.read_bytes()) for p in files]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return _sha256(Path(out).read_bytes())


class Models:
    """The bundles installed in one state directory."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir) / "models"
        self.bundles = self.root / "bundles"

    def install(self, tar_path: Path, *, sha256: str | None = None) -> str:
        """Verify ``tar_path`` (its own hashes, the format, that the models load; ``sha256`` of the whole
        file when given), unpack it into ``bundles/<id>`` and make it the staged bundle; returns the id."""
        tar_path = Path(tar_path)
        try:
            size = tar_path.stat().st_size
        except OSError as exc:
            raise ModelError(f"{tar_path}: cannot read ({exc.strerror or exc})") from None
        if size > MAX_BUNDLE_BYTES:
            raise ModelError(f"{tar_path}: {size} bytes, more than a model bundle may be ({MAX_BUNDLE_BYTES})")
        data = tar_path.read_bytes()
        if sha256 is not None and not _same(_sha256(data), sha256):
            raise ModelError(f"{tar_path}: sha256 is {_sha256(data)}, not the {sha256.lower()} expected: refused")
        files = _members(tar_path, data)
        sums = _parse_sums(tar_path, files.pop(SUMS, None))
        if set(sums) != set(files):
            missing, unlisted = sorted(set(sums) - set(files)), sorted(set(files) - set(sums))
            raise ModelError(f"{tar_path}: {SUMS} does not match the files (missing {missing}, unlisted {unlisted})")
        for name, content in files.items():
            if not _same(_sha256(content), sums[name]):
                raise ModelError(f"{tar_path}: {name} does not match its sha256 in {SUMS}: refused (damaged or altered)")
        self.bundles.mkdir(parents=True, exist_ok=True)
        new_id = _sha256(_sums_bytes(tar_path, data))[:12]
        target = self.bundles / new_id
        if not target.is_dir():
            scratch = Path(tempfile.mkdtemp(dir=self.bundles, prefix=".unpack-"))
            try:
                for name, content in files.items():
                    (scratch / name).write_bytes(content)
                (scratch / SUMS).write_bytes(_sums_bytes(tar_path, data))
                _check_loads(scratch, tar_path)
                os.chmod(scratch, 0o755)
                os.rename(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        self._link("staged", f"bundles/{new_id}")
        return new_id

    def activate(self) -> tuple[str, str]:
        """The staged bundle becomes active, the active one previous; returns (new, old)."""
        staged = self.target("staged")
        if staged is None:
            raise ModelError("no staged bundle: install one first (maskgate model install bundle.tar)")
        old = self.target("active") or SHIPPED
        if old == staged:
            raise ModelError(f"{_name(staged)} is already active")
        self._link("previous", old)
        self._link("active", staged)
        (self.root / "staged").unlink()
        return _name(staged), _name(old)

    def rollback(self) -> tuple[str, str]:
        """The previous bundle becomes active again (and the one it replaces, previous); returns (new, old)."""
        previous = self.target("previous")
        if previous is None:
            raise ModelError("nothing to roll back to: no bundle was activated before")
        old = self.target("active") or SHIPPED
        self._link("previous", old)
        self._link("active", previous)
        return _name(previous), _name(old)

    def target(self, link: str) -> str | None:
        """What a link names ("bundles/<id>" or "shipped"), or None."""
        try:
            return os.readlink(self.root / link)
        except OSError:
            return None

    def path(self, link: str) -> Path | None:
        """The directory a link names (the shipped bundle for "shipped"), or None."""
        target = self.target(link)
        if target is None:
            return None
        return default_bundle_dir() if target == SHIPPED else self.root / target

    def status(self) -> dict[str, str | None]:
        return {link: (_name(t) if (t := self.target(link)) else None) for link in LINKS}

    def _link(self, link: str, target: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{link}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.replace(temporary, self.root / link)


def installed_bundle(state_dir: Path) -> Path | None:
    """The active installed bundle of a state directory, or None (then the shipped one is used)."""
    path = Models(state_dir).path("active")
    if path is not None and not path.is_dir():
        raise ModelError(f"{Models(state_dir).root / 'active'}: names {path}, which is gone: "
                         "maskgate model rollback, or activate another bundle")
    return path


def _name(target: str) -> str:
    return target.rsplit("/", 1)[-1]


def _members(tar_path: Path, data: bytes) -> dict[str, bytes]:
    """The tar's regular files, by name; anything but plain top-level files is refused."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise ModelError(f"{tar_path}: {len(members)} entries, more than a bundle holds")
            files = {}
            for member in members:
                if not member.isfile() or not NAME.match(member.name) or member.name in files:
                    raise ModelError(f"{tar_path}: {member.name!r}: a bundle holds only plain top-level files")
                files[member.name] = tar.extractfile(member).read()
            return files
    except tarfile.TarError as exc:
        raise ModelError(f"{tar_path}: not a bundle tar ({exc})") from None


def _sums_bytes(tar_path: Path, data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.extractfile(SUMS).read()


def _parse_sums(tar_path: Path, text: bytes | None) -> dict[str, str]:
    if text is None:
        raise ModelError(f"{tar_path}: no {SUMS}: not a maskgate bundle (make one with maskgate model pack)")
    sums = {}
    for line in text.decode("ascii", errors="replace").splitlines():
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](\S+)", line.strip())
        if not match or not NAME.match(match[2]):
            raise ModelError(f"{tar_path}: {SUMS}: not a sha256sum line: {line[:80]!r}")
        sums[match[2]] = match[1]
    return sums


def _check_loads(bundle_dir: Path, tar_path: Path) -> None:
    try:
        metadata = read_metadata(bundle_dir)
        for path in model_files(bundle_dir, metadata):
            if not path.is_file():
                raise ModelError(f"{path.name}: named by {METADATA_FILE} but not in the bundle")
        MaskClassifier(bundle_dir, num_threads=1)
    except ModelError as exc:
        raise ModelError(f"{tar_path}: {str(exc).replace(str(bundle_dir) + '/', '')}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same(a: str, b: str) -> bool:
    return a.lower() == b.strip().lower()
