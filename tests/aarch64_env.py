"""An emulated Raspberry Pi OS 64-bit userland for tests: Debian bookworm arm64 Python 3.11 under
qemu user emulation, with maskgate installed exactly as pip resolves it for the Pi.

Nothing is changed system-wide: apt runs with private lists (derived from this machine's own Debian
sources), packages are unpacked with ``dpkg -x``, no binfmt handler is registered, nothing is mounted.
Everything downloaded is cached under ``$MASKGATE_AARCH64_CACHE`` (default ``~/.cache/maskgate-aarch64``).

qemu comes from bookworm-backports (10.x): bookworm's own qemu 7.2 crashes inside LiteRT's arm64
kernels (SIGSEGV on the first invoke), which a real Pi does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("MASKGATE_AARCH64_CACHE", Path.home() / ".cache" / "maskgate-aarch64"))
SUITE = "bookworm"  # Raspberry Pi OS 64-bit 12
PYTHON_VERSION = "3.11"
# Every manylinux tag a bookworm (glibc 2.36) Pi accepts: pip matches only the tags listed.
PI_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)] + ["manylinux2014_aarch64"]
PYTHON_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libsqlite3-0", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1", "libncursesw6",
    "libtinfo6", "libuuid1", "libcrypt1", "libdb5.3", "libgdbm6", "libreadline8", "media-types",
]


class Unavailable(Exception):
    """Something the emulated Pi needs cannot be had on this machine (no apt, no network)."""


class NoPiWheel(AssertionError):
    """A dependency has no wheel a Raspberry Pi OS 64-bit can install."""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def debian_mirror() -> str:
    """The Debian archive this machine's apt already uses (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text()
        if f"{SUITE}" not in text:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise Unavailable("no Debian bookworm archive configured in /etc/apt")


def apt_download(packages: list[str], *, arch: str, suite: str, dest: Path) -> list[Path]:
    """``apt-get download`` into ``dest`` with private apt state (the system's apt is untouched)."""
    if not shutil.which("apt-get"):
        raise Unavailable("apt-get not found (a Debian/Ubuntu host is needed)")
    state = CACHE / "apt" / f"{suite}-{arch}"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    sources.write_text(f"deb [arch={arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                       f"{debian_mirror()} {suite} main\n")
    (state / "status").touch()
    options = [f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/dev/null",
               f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache={state / 'cache'}",
               f"-oDir::State::status={state / 'status'}", f"-oAPT::Architecture={arch}",
               f"-oAPT::Architectures={arch}", "-qq"]
    if os.geteuid() == 0:
        options.append("-oAPT::Sandbox::User=root")  # _apt cannot write into the cache under $HOME
    if not any((state / "lists").glob("*Packages*")):
        done = _run(["apt-get", *options, "update"])
        if done.returncode:
            raise Unavailable(f"apt-get update ({suite}, {arch}) failed: {done.stderr.strip()[-300:]}")
    dest.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(dest.glob(f"{p.split(':')[0]}_*.deb"))]
    if missing:
        done = _run(["apt-get", *options, "download", *missing], cwd=dest)
        if done.returncode:
            raise Unavailable(f"apt-get download failed: {done.stderr.strip()[-300:]}")
    return sorted(dest.glob("*.deb"))


def qemu() -> Path:
    """A static qemu-aarch64 (bookworm-backports), unpacked into the cache."""
    binary = CACHE / "qemu" / "usr" / "bin" / "qemu-aarch64"
    if not binary.is_file():
        (deb,) = apt_download(["qemu-user"], arch="amd64", suite=f"{SUITE}-backports", dest=CACHE / "debs-qemu")
        _run(["dpkg", "-x", str(deb), str(CACHE / "qemu")], check=True)
    return binary


def python_root() -> Path:
    """Debian bookworm arm64 Python 3.11 and its libraries, unpacked into a root directory."""
    root = CACHE / "root"
    if not (root / "usr" / "bin" / f"python{PYTHON_VERSION}").is_file():
        for deb in apt_download([f"{p}:arm64" if p != "media-types" else p for p in PYTHON_PACKAGES],
                                arch="arm64", suite=SUITE, dest=CACHE / "debs-arm64"):
            _run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def pip_for_pi(*args: str) -> subprocess.CompletedProcess:
    """The host's pip, resolving for Raspberry Pi OS 64-bit: aarch64, CPython 3.11, wheels only."""
    platforms = [a for tag in PI_PLATFORMS for a in ("--platform", tag)]
    return _run([sys.executable, "-m", "pip", *args, "--only-binary=:all:", "--python-version", PYTHON_VERSION,
                 "--implementation", "cp", *platforms, "--disable-pip-version-check"])


def download_for_pi(requirements: list[str], dest: Path, *, no_deps: bool = False) -> None:
    """Fetch aarch64 wheels; a requirement with none fails naming it."""
    done = pip_for_pi("download", "--dest", str(dest), *(["--no-deps"] if no_deps else []), *requirements)
    if done.returncode:
        missing = re.findall(r"No matching distribution found for (\S+)", done.stderr)
        if missing:
            raise NoPiWheel(f"no wheel for Raspberry Pi OS 64-bit (aarch64, CPython {PYTHON_VERSION}, glibc 2.36) "
                            f"for: {', '.join(missing)}")
        raise Unavailable(f"pip download failed: {done.stderr.strip()[-300:]}")


def install_for_pi(repo: Path, target: Path) -> dict[str, str]:
    """Install the device side of ``repo`` into ``target`` as a Pi would get it; return name → version."""
    wheels = CACHE / "wheels"
    build = target.parent / "build"
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(build), str(repo)])
    if done.returncode:
        raise AssertionError(f"building the maskgate wheel failed: {done.stderr[-500:]}")
    (project_wheel,) = build.glob("maskgate-*.whl")
    # [pi], as install.sh installs it: simplejpeg for picamera2, built for the venv's numpy. A maskgate wheel
    # cached by an earlier run has the same name but maybe other dependencies: pip would resolve from it.
    for stale in wheels.glob("maskgate-*.whl"):
        stale.unlink()
    download_for_pi([f"{project_wheel}[pi]"], wheels)
    done = pip_for_pi("install", "--target", str(target), "--no-index", "--find-links", str(wheels),
                      "--upgrade", f"{project_wheel}[pi]")
    if done.returncode:
        raise AssertionError(f"installing {project_wheel.name} for aarch64 failed: {done.stderr[-500:]}")
    versions = {}
    for info in target.glob("*.dist-info"):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        versions[name] = version
    return versions


def run_on_pi(args: list[str], *, target: Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the emulated Pi's python3.11 with ``target`` on its path."""
    root = python_root()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(cwd), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return _run([str(qemu()), "-L", str(root), str(root / "usr" / "bin" / f"python{PYTHON_VERSION}"), *args],
                cwd=cwd, env=env, timeout=timeout)
