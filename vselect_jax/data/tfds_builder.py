"""A TFDS dataset of LLaVA / Cambrian records with their images inside.

One example per JSONL record (``file_format="array_record"``, so
``tfds.data_source`` and grain read it by index, from disk or a bucket):

  index         int64    the record's 0-based non-empty line
  record        text     the JSON line, verbatim (even if malformed: the
                         pipeline counts it as it would from the JSONL)
  media_names   [text]   every image path the record names
  media_bytes   [bytes]  their file contents (empty where unavailable)
  media_status  [text]   "" or why the bytes are missing ("missing_file",
                         "bad_path"), so the skip accounting matches the
                         JSONL path

Examples keep the JSONL's order. Videos are not embedded (training takes images only). Needs no TensorFlow.
"""
from __future__ import annotations


import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vselect_jax import paths
from vselect_jax.data.errors import RecordError
from vselect_jax.data.records import (TFDS_NAME, confined_path, media_paths,
                                      parse_record)


def record_media(line: str, root: str) -> tuple[list, list, list]:
  """(names, bytes, status) of the images one JSONL record names."""
  try:
    names = media_paths(parse_record(line), "image")
  except RecordError:  # stored verbatim; the pipeline reports it
    return [], [], []
  blobs, status = [], []
  for rel in names:
    try:
      with paths.open(confined_path(root, rel), "rb") as f:
        blobs.append(f.read())
      status.append("")
    except (PermissionError, ValueError):
      blobs.append(b"")
      status.append("bad_path")
    except OSError:
      blobs.append(b"")
      status.append("missing_file")
  return names, blobs, status


class CambrianRecords(tfds.core.GeneratorBasedBuilder):
  """JSONL + image folder -> ArrayRecord shards (TFDS name
  ``cambrian_records``; one dataset per ``data_dir``)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Records with embedded image bytes."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS's lookup imports importlib_resources, which it does not install
    # on Python >= 3.9; the path only locates an (absent) checksums file.
    return epath.Path(__file__)

  def __init__(self, *, annotation: str | None = None,
               root: str | None = None, **kwargs):
    self._annotation = annotation
    self._root = root
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    return tfds.core.DatasetInfo(
        builder=self,
        description="LLaVA/Cambrian records with their images embedded.",
        # Keep line order: example i is line i, so a mixture drawn from the
        # shards is the same as one drawn from the JSONL.
        disable_shuffling=True,
        features=f.FeaturesDict({
            "index": f.Scalar(dtype=np.int64),
            "record": f.Text(),
            "media_names": f.Sequence(f.Text()),
            "media_bytes": f.Sequence(f.Tensor(shape=(), dtype=np.object_)),
            "media_status": f.Sequence(f.Text()),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager  # local files only
    if not self._annotation:
      raise ValueError("CambrianRecords needs annotation= (and root=) to "
                       "build; reading needs neither")
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    root = self._root or paths.dirname(self._annotation)
    with paths.open(self._annotation, encoding="utf-8",
                    errors="replace") as f:
      lines = (line for line in f if line.strip())
      for i, line in enumerate(lines):
        names, blobs, status = record_media(line, root)
        yield i, {"index": i, "record": line, "media_names": names,
                  "media_bytes": blobs, "media_status": status}


assert CambrianRecords.name == TFDS_NAME, CambrianRecords.name
