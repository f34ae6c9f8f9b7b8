"""One path layer for every file the runs and converters read or write.

A path is a local path or a URL (``gs://bucket/dir``; ``s3://`` too). Local
paths keep the ``os`` / ``open`` semantics exactly; URLs go through
``etils.epath`` (the layer Orbax and TFDS use), whose ``gs://`` backend is
fsspec + ``gcsfs`` when TensorFlow is absent (the optional extra ``gcs``).

Object stores have no directories, renames or appends, so:
  * ``open_append`` rewrites the whole object on every flush (metrics and
    TensorBoard events are small);
  * ``staged_dir`` builds a directory on local disk and, for a URL, uploads
    it file by file with the ``last`` files (markers) uploaded last, so a
    half-uploaded directory is never taken for a finished one;
  * ``local_target`` / ``local_copy`` hand code that needs a real file (the
    numpy safetensors writer, memmapped readers) a temporary local one.

Orbax checkpoints and ArrayRecord shards are written by C++ (tensorstore,
riegeli) with their own ``gs://`` clients: they get the URL as given
(``absolute`` keeps it intact).
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import importlib.util
import io
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import IO, Iterator, Sequence, Union

PathLike = Union[str, os.PathLike]

# scheme -> (fsspec protocol, package that provides it)
_FSSPEC = {"gs": ("gcs", "gcsfs"), "s3": ("s3", "s3fs"), "az": ("az", "adlfs"),
           "hf": ("hf", "huggingface_hub")}


def scheme(path: PathLike) -> str | None:
  """``"gs"`` for ``gs://b/x``; None for a local path."""
  s = os.fspath(path)
  return s.split("://", 1)[0] if "://" in s else None


def is_remote(path: PathLike) -> bool:
  return scheme(path) is not None


def as_path(path: PathLike):
  """The ``epath.Path`` of ``path``.

  Raises:
    ValueError: the URL scheme is not one epath knows.
    ImportError: its filesystem package is not installed (names it).
  """
  from etils import epath
  s = scheme(path)
  if s is not None:
    if s not in _FSSPEC:
      known = ", ".join(f"{k}://" for k in _FSSPEC)
      raise ValueError(f"{os.fspath(path)}: unsupported path scheme {s}:// "
                       f"(use a local path or {known})")
    _require_backend(s)
  return epath.Path(path)


@functools.lru_cache(maxsize=None)  # successes only: one check per scheme
def _require_backend(s: str) -> None:
  """Fails early, naming the package, when ``s://`` cannot be opened."""
  import fsspec
  protocol, package = _FSSPEC[s]
  if _epath_uses_tf():
    return
  try:
    fsspec.get_filesystem_class(protocol)
  except ImportError as e:
    raise ImportError(f"{s}:// paths need the {package} package: "
                      f"{_install_hint(s, package)}") from e


def _has_module(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:  # a parent package is missing
    return False


def _install_hint(s: str, package: str) -> str:
  return ("pip install 'vselect-jax[gcs]' (gcsfs, google-cloud-storage)"
          if s == "gs" else f"pip install {package}")


def require_gcs_api(path: PathLike, user: str) -> None:
  """For a gs:// ``path``: fails, naming the package, unless
  google-cloud-storage is installed (``user``, e.g. Orbax, calls it)."""
  if scheme(path) == "gs" and not _has_module("google.cloud.storage"):
    raise ImportError(f"{user} on {os.fspath(path)} needs the "
                      f"google-cloud-storage package: "
                      f"{_install_hint('gs', 'google-cloud-storage')}")


def _epath_uses_tf() -> bool:
  """epath prefers tf.io.gfile for URLs when TensorFlow is installed."""
  return (importlib.util.find_spec("tensorflow") is not None and
          os.environ.get("EPATH_USE_TF", "").lower() not in
          ("false", "no", "f", "0"))


def join(path: PathLike, *parts: str) -> str:
  if not is_remote(path):
    return os.path.join(path, *parts)
  return os.fspath(as_path(path).joinpath(*parts))


def dirname(path: PathLike) -> str:
  if not is_remote(path):
    return os.path.dirname(path)
  return os.fspath(as_path(path).parent)


def absolute(path: PathLike) -> str:
  """``os.path.abspath`` for local paths; URLs unchanged (abspath would turn
  ``gs://b`` into ``<cwd>/gs:/b``)."""
  return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def resolve(path: PathLike) -> str:
  """Local: ``os.path.realpath``; URL: ``.`` and ``..`` collapsed (object
  stores have no symlinks)."""
  if not is_remote(path):
    return os.path.realpath(path)
  s, rest = os.fspath(path).split("://", 1)
  return f"{s}://{posixpath.normpath('/' + rest).lstrip('/')}"


def sep(path: PathLike) -> str:
  return "/" if is_remote(path) else os.sep


def exists(path: PathLike) -> bool:
  return os.path.exists(path) if not is_remote(path) else as_path(path).exists()


def isdir(path: PathLike) -> bool:
  return os.path.isdir(path) if not is_remote(path) else as_path(path).is_dir()


def isfile(path: PathLike) -> bool:
  if not is_remote(path):
    return os.path.isfile(path)
  p = as_path(path)
  return p.exists() and not p.is_dir()


def makedirs(path: PathLike) -> None:
  """Creates ``path`` and its parents; fine if it exists."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)
  else:
    as_path(path).mkdir(parents=True, exist_ok=True)


def open(path: PathLike, mode: str = "r", *, encoding: str | None = None,  # pylint: disable=redefined-builtin
         errors: str | None = None) -> IO:
  """``open`` for local paths and URLs (modes r, w, a, with or without b)."""
  if not is_remote(path):
    return builtins.open(path, mode, encoding=encoding, errors=errors)
  if "a" in mode:
    return open_append(path, binary="b" in mode)
  raw = as_path(path).open(mode if "b" in mode else mode + "b")
  if "b" in mode:
    return raw
  return io.TextIOWrapper(raw, encoding=encoding or "utf-8",
                          errors=errors or "strict")


def read_text(path: PathLike, *, errors: str | None = None) -> str:
  with open(path, encoding="utf-8", errors=errors) as f:
    return f.read()


def read_bytes(path: PathLike) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def write_text(path: PathLike, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_bytes(path: PathLike, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def listdir(path: PathLike) -> list[str]:
  """Sorted entry names of a directory."""
  if not is_remote(path):
    return sorted(os.listdir(path))
  return sorted(p.name for p in as_path(path).iterdir())


def rmtree(path: PathLike) -> None:
  """Removes a directory tree; fine if it does not exist."""
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    as_path(path).rmtree(missing_ok=True)


def move(src: PathLike, dst: PathLike) -> None:
  """Renames a file or directory (an object store copies, then deletes)."""
  if not is_remote(src) and not is_remote(dst):
    os.rename(src, dst)
    return
  if isdir(src):
    copytree(src, dst)
    rmtree(src)
  else:
    copy(src, dst)
    as_path(src).unlink()


def copy(src: PathLike, dst: PathLike) -> None:
  """Copies one file (either side local or a URL); ``dst`` is a file path."""
  if not is_remote(src) and not is_remote(dst):
    shutil.copyfile(src, dst)
    return
  with open(src, "rb") as fin, open(dst, "wb") as fout:
    shutil.copyfileobj(fin, fout, 1 << 24)


def copytree(src: PathLike, dst: PathLike, *, last: Sequence[str] = ()) -> None:
  """Copies a directory tree file by file (local <-> URL, either way);
  top-level files named in ``last`` are copied after everything else."""
  makedirs(dst)
  names = listdir(src)
  for name in [n for n in names if n not in last] + [n for n in names
                                                       if n in last]:
    s, d = join(src, name), join(dst, name)
    if isdir(s):
      copytree(s, d)
    else:
      copy(s, d)


class _RewriteOnFlush(io.RawIOBase):
  """An append-mode file on an object store: keeps the object's bytes and
  rewrites the whole object on ``flush`` (stores have no append)."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self.data = bytearray(read_bytes(path) if exists(path) else b"")
    self.dirty = True

  def writable(self) -> bool:
    return True

  def write(self, b) -> int:
    self.data += bytes(b)
    self.dirty = True
    return len(b)

  def flush(self) -> None:
    if self.dirty and not self.closed:
      write_bytes(self.path, bytes(self.data))
      self.dirty = False

  def close(self) -> None:
    if not self.closed:
      self.flush()
    super().close()


def open_append(path: PathLike, binary: bool = False) -> IO:
  """An append-mode file; on a URL each ``flush`` makes the data durable."""
  if not is_remote(path):
    return builtins.open(path, "ab" if binary else "a")
  raw = _RewriteOnFlush(os.fspath(path))
  if binary:
    return raw
  return io.TextIOWrapper(raw, encoding="utf-8", write_through=True)


@contextlib.contextmanager
def local_target(dst: PathLike) -> Iterator[str]:
  """A local file path to write; on success it is ``dst`` (a local ``dst``
  is yielded as is; a URL gets a temporary file uploaded at the end)."""
  if not is_remote(dst):
    yield os.fspath(dst)
    return
  with tempfile.TemporaryDirectory(prefix="vselect-up-") as tmp:
    local = os.path.join(tmp, posixpath.basename(os.fspath(dst)))
    yield local
    copy(local, dst)


@contextlib.contextmanager
def local_copy(src: PathLike) -> Iterator[str]:
  """A local path with ``src``'s contents (file or directory): ``src``
  itself when local, else a temporary download removed afterwards."""
  if not is_remote(src):
    yield os.fspath(src)
    return
  with tempfile.TemporaryDirectory(prefix="vselect-down-") as tmp:
    local = os.path.join(tmp, posixpath.basename(os.fspath(src).rstrip("/"))
                         or "src")
    if isdir(src):
      copytree(src, local)
    else:
      copy(src, local)
    yield local


@contextlib.contextmanager
def staged_dir(dst: PathLike, *, last: Sequence[str] = (),
               prefix: str = ".stage-") -> Iterator[str]:
  """A local directory to fill; on success it replaces ``dst``.

  Local ``dst``: staged next to it and renamed into place (atomic). URL:
  staged in the temp dir, the old ``dst`` removed, the tree uploaded with
  ``last`` files at the end. On failure the stage is removed and ``dst`` is
  untouched.
  """
  remote = is_remote(dst)
  if remote:  # $TMPDIR must hold the whole directory
    stage = tempfile.mkdtemp(prefix=prefix)
  else:  # same filesystem as dst, for the rename; default permissions
    stage = os.path.join(os.path.dirname(os.path.abspath(dst)),
                         prefix + uuid.uuid4().hex[:12])
    os.makedirs(stage)
  try:
    yield stage
    if remote:
      rmtree(dst)
      copytree(stage, dst, last=last)
    else:
      if os.path.exists(dst):
        shutil.rmtree(dst)
      os.replace(stage, dst)
  finally:
    shutil.rmtree(stage, ignore_errors=True)


class _TensorBoardFactory:
  """tensorboardX writer factory for URLs (its own gs:// writer needs
  google-cloud-storage; this one goes through this layer)."""

  class _File:
    # No ``fileno``: tensorboardX fsyncs files that have one.
    def __init__(self, path):
      self._f = open_append(path, binary=True)
      self.write, self.flush, self.close = (self._f.write, self._f.flush,
                                            self._f.close)

  def open(self, path):
    return self._File(path)

  def directory_check(self, path):
    makedirs(path)


def summary_writer(logdir: PathLike):
  """A tensorboardX ``SummaryWriter`` writing under ``logdir`` (local or a
  URL). Raises ImportError without tensorboardX."""
  from tensorboardX import SummaryWriter, record_writer
  s = scheme(logdir)
  if s is not None:
    as_path(logdir)  # unsupported scheme / missing package: fail here
    record_writer.register_writer_factory(s, _TensorBoardFactory())
  return SummaryWriter(os.fspath(logdir))
