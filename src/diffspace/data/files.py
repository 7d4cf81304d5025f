"""Where data live on disk, their published checksums, and downloading them.

Data directory: an explicit path, else $DIFFSPACE_DATA, else $XDG_CACHE_HOME/diffspace
(or ~/.cache/diffspace). Data set `name` lives in `<data dir>/<name>/`.

MNIST and Fashion-MNIST are verified by the SHA-256 of the *uncompressed* IDX content (the
gzip header of a re-compressed file may differ, the content may not). CIFAR-10 is verified by
the MD5 values published with it (archive) and used by every CIFAR loader (batches).
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from diffspace.data.catalog import check_name
from diffspace.data.errors import DataError
from diffspace.data.idx import read_gzip

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

IDX_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: The 8×8 digits shipped inside the package (scikit-learn's load_digits, the UCI optdigits test set; licence
#: and provenance in digits-NOTICE.txt beside it), and the SHA-256 of each array's bytes.
DIGITS_FILE = "digits.npz"
DIGITS_NOTICE = "digits-NOTICE.txt"
DIGITS_SHA256 = {
    "images": "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3",
    "labels": "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0",
}


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: `explicit`, else $DIFFSPACE_DATA, else $XDG_CACHE_HOME/diffspace
    or ~/.cache/diffspace (user home expanded, not created)."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get("DIFFSPACE_DATA", "")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "diffspace"


_resolve = data_dir  # `fetch` and `check` take an argument named `data_dir`, shadowing the function


def _fix_hint(name: str, directory: Path) -> str:
    """How to put data set `name` into `directory`, for error messages."""
    if name in IDX_MIRRORS or name == "cifar10":
        return (
            f"Run `diffspace data fetch {name}` (it downloads into the data directory: --data-dir, "
            f"$DIFFSPACE_DATA or ~/.cache/diffspace), or copy the files into {directory}."
        )
    return f"Copy the files into {directory} (or point --data-dir / $DIFFSPACE_DATA at a folder holding {name}/)."


def require_files(name: str, directory: Path, files: tuple[str, ...]) -> list[Path]:
    """Return `directory/f` for each file; DataError naming every missing one, the directory and the fix."""
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise DataError(
            f"{name}: missing {', '.join(missing)} in {directory}. {_fix_hint(name, directory)}"
        )
    return [directory / f for f in files]


def sha256_hex(content: bytes) -> str:
    """SHA-256 of `content` as lowercase hex."""
    return hashlib.sha256(content).hexdigest()


def md5_file(path: Path) -> str:
    """MD5 of a file's bytes as lowercase hex (CIFAR-10's published checksums are MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified_idx(name: str, path: Path, file: str | None = None) -> bytes:
    """Uncompressed content of an MNIST-family .gz file, after checking its SHA-256 against the
    value published for `file` (default: the path's own name); DataError naming the file with
    expected and actual checksums on mismatch."""
    content = read_gzip(path)
    expected = IDX_SHA256[name][file or path.name]
    actual = sha256_hex(content)
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 of the uncompressed content does not match the published value "
            f"(expected {expected}, actual {actual}). The file is corrupt or not the {name} original; "
            f"delete it and run `diffspace data fetch {name}`."
        )
    return content


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The packaged digits: images (1797, 8, 8) uint8 with values 0..16 and labels (1797,) uint8, each array's
    SHA-256 checked against DIGITS_SHA256 (DataError naming the file when it does not match)."""
    path = resources.files("diffspace.data") / DIGITS_FILE
    try:
        with resources.as_file(path) as file, np.load(file) as archive:
            arrays = {key: np.ascontiguousarray(archive[key]) for key in DIGITS_SHA256}
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"digits: the packaged file {path} cannot be read ({exc}); reinstall diffspace.") from exc
    for key, expected in DIGITS_SHA256.items():
        actual = sha256_hex(arrays[key].tobytes())
        if arrays[key].dtype != np.uint8 or actual != expected:
            raise DataError(f"digits: the {key} in the packaged file {path} are not the published ones "
                            f"(SHA-256 expected {expected}, actual {actual}); reinstall diffspace.")
    return arrays["images"], arrays["labels"]


def find_cifar10_dir(root: Path) -> Path:
    """The folder holding the CIFAR-10 batches: `root/cifar-10-batches-py` if it exists, else `root`."""
    nested = root / CIFAR10_FOLDER
    return nested if nested.is_dir() else root


def _download(url: str, dest: Path, progress: bool) -> Path:
    """Download `url` to a temporary file next to `dest` and return that file's path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    request = urllib.request.Request(url, headers={"User-Agent": "diffspace"})
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _fetch_idx(name: str, root: Path, progress: bool) -> list[Path]:
    """Ensure the four IDX files of `name` are in `root/name`, verified; download what is missing."""
    directory = root / name
    paths: list[Path] = []
    failures: list[str] = []
    for file in (f for split in ("train", "test") for f in IDX_FILES[split]):
        dest = directory / file
        paths.append(dest)
        if dest.is_file():
            try:
                read_verified_idx(name, dest)
                continue
            except DataError:
                pass
        tried: list[str] = []
        for mirror in IDX_MIRRORS[name]:
            url = mirror + file
            try:
                tmp = _download(url, dest, progress)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                tried.append(f"{url} ({exc})")
                continue
            try:
                read_verified_idx(name, tmp, file)
            except DataError as exc:
                tmp.unlink(missing_ok=True)
                tried.append(f"{url} (downloaded file failed verification: {exc})")
                continue
            os.replace(tmp, dest)
            break
        else:
            failures.append(f"{file}: tried " + "; ".join(tried))
    if failures:
        raise DataError(
            f"Could not download {name} into {directory}:\n  " + "\n  ".join(failures)
            + f"\nWithout internet access, copy the files {', '.join(IDX_SHA256[name])} into {directory}."
        )
    return paths


def _cifar10_verified(directory: Path) -> bool:
    """True if all six CIFAR-10 batches are in `directory` with their published MD5."""
    return all((directory / f).is_file() and md5_file(directory / f) == md5 for f, md5 in CIFAR10_MD5.items())


def _extract_tar(archive: Path, dest: Path) -> None:
    """Extract regular files and folders of a .tar.gz into `dest`, refusing any path that would
    land outside it; links and devices are skipped. DataError naming the archive if it is corrupt."""
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                target = (root / member.name).resolve()
                if target != root and root not in target.parents:
                    raise DataError(f"{archive}: refusing to extract {member.name!r} outside {dest}.")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    if source is None:
                        raise DataError(f"{archive}: cannot read member {member.name!r}.")
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive} is truncated or not a valid .tar.gz ({exc}); delete it and fetch again.") from exc


def _fetch_cifar10(root: Path, progress: bool) -> list[Path]:
    """Ensure the verified CIFAR-10 batches are in `root/cifar10/cifar-10-batches-py`."""
    directory = root / "cifar10"
    batches = directory / CIFAR10_FOLDER
    paths = [batches / f for f in CIFAR10_MD5]
    if _cifar10_verified(batches):
        return paths
    archive = directory / "cifar-10-python.tar.gz"
    try:
        tmp = _download(CIFAR10_URL, archive, progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(
            f"Could not download cifar10 from {CIFAR10_URL} ({exc}). Without internet access, put the "
            f"batches {', '.join(CIFAR10_MD5)} into {batches} (extract cifar-10-python.tar.gz in {directory})."
        ) from exc
    actual = md5_file(tmp)
    if actual != CIFAR10_ARCHIVE_MD5:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{CIFAR10_URL}: downloaded archive MD5 mismatch (expected {CIFAR10_ARCHIVE_MD5}, actual {actual})."
        )
    os.replace(tmp, archive)
    _extract_tar(archive, directory)
    archive.unlink()
    if not _cifar10_verified(batches):
        raise DataError(f"{archive} did not contain the verified CIFAR-10 batches expected in {batches}.")
    return paths


def _present_files(name: str, directory: Path, pattern: str) -> list[Path]:
    """The files matching `pattern` in `directory`; DataError with the fix if there are none."""
    found = sorted(directory.glob(pattern)) if directory.is_dir() else []
    if not found:
        raise DataError(f"{name}: no {pattern} files in {directory}. {_fix_hint(name, directory)}")
    return found


def fetch(name: str, data_dir: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Make data set `name` available in the data directory and return its files.

    mnist / fashion-mnist / cifar10: verified files are kept, the rest downloaded from the
    canonical locations (written to a temporary file, verified, then renamed into place).
    microstructure / darcy: no canonical download; returns the files present or explains where
    to copy them. digits / grf / folder: nothing to fetch, returns [].
    """
    check_name(name)
    root = _resolve(data_dir)
    if name in ("binarized-mnist", "mnist"):
        return _fetch_idx("mnist", root, progress)
    if name == "fashion-mnist":
        return _fetch_idx(name, root, progress)
    if name == "cifar10":
        return _fetch_cifar10(root, progress)
    if name == "microstructure":
        return _present_files(name, root / name, "*.png")
    if name == "darcy":
        return _present_files(name, root / name, "darcy_*.pt")
    return []


def _size(path: Path) -> str:
    """A file's size in bytes, with thousands separators."""
    return f"{path.stat().st_size:,} bytes"


def check(name: str, data_dir: str | Path | None = None) -> list[str]:
    """Human-readable status of data set `name` on disk: one line per file with its size and
    whether its checksum is OK, mismatched or the file is missing."""
    check_name(name)
    root = _resolve(data_dir)
    if name == "digits":
        read_digits()
        return [f"digits: shipped with diffspace ({DIGITS_FILE}, SHA-256 verified; licence in {DIGITS_NOTICE}); "
                "nothing to download."]
    if name == "grf":
        return ["grf: generated on the fly from a seed; nothing on disk to check."]
    if name == "folder":
        return ["folder: a user-given folder (DataConfig.folder); no published checksums."]
    lines: list[str] = []
    if name in ("mnist", "binarized-mnist", "fashion-mnist"):
        family = "fashion-mnist" if name == "fashion-mnist" else "mnist"
        for file, expected in IDX_SHA256[family].items():
            path = root / family / file
            if not path.is_file():
                lines.append(f"{path}: missing")
                continue
            try:
                actual = sha256_hex(read_gzip(path))
            except DataError:
                lines.append(f"{path}: {_size(path)}, corrupt gzip")
                continue
            status = "checksum OK" if actual == expected else f"checksum MISMATCH (expected {expected}, actual {actual})"
            lines.append(f"{path}: {_size(path)}, {status}")
        return lines
    if name == "cifar10":
        directory = find_cifar10_dir(root / "cifar10")
        for file, expected in CIFAR10_MD5.items():
            path = directory / file
            if not path.is_file():
                lines.append(f"{path}: missing")
                continue
            actual = md5_file(path)
            status = "checksum OK" if actual == expected else f"checksum MISMATCH (md5 expected {expected}, actual {actual})"
            lines.append(f"{path}: {_size(path)}, {status}")
        return lines
    pattern = "*.png" if name == "microstructure" else "darcy_*.pt"
    directory = root / name
    found = sorted(directory.glob(pattern)) if directory.is_dir() else []
    if not found:
        return [f"{directory}/{pattern}: missing"]
    return [f"{path}: {_size(path)}, present (no published checksum)" for path in found]


#: PIL modes with more than 8 bits per channel (refused: the data sets are 8-bit).
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image(path: Path, mode: str) -> np.ndarray:
    """One 8-bit image converted to PIL mode "L" (H, W) or "RGB" (H, W, 3), uint8; DataError
    naming the file if it is unreadable or has more than 8 bits per channel."""
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH_MODES:
                raise DataError(f"{path}: mode {image.mode} has more than 8 bits per channel; expected 8-bit images.")
            return np.array(image.convert(mode), dtype=np.uint8)  # a writable copy, as torch.from_numpy wants
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}).") from exc
