"""The artifact root a setting names: a folder or ``s3://bucket/prefix``.

:class:`~loopml.store.artifacts.LocalRoot` and :class:`~loopml.store.s3.S3Root`
both satisfy :class:`~loopml.store.artifacts.ArtifactRoot`; this module picks one
by the value's scheme (``LOOPML_ARTIFACT_ROOT``, ``TrackingStore(artifact_root=...)``).
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .artifacts import ArtifactRoot, LocalRoot
from .s3 import S3Root

__all__ = ["open_root"]


def open_root(root: str | os.PathLike[str] | ArtifactRoot) -> ArtifactRoot:
    """The artifact root that ``root`` names: a folder, ``s3://bucket/prefix``, or a root already made.

    >>> open_root("./.loopml/artifacts").uri           # a folder, made absolute
    '/.../.loopml/artifacts'
    >>> open_root("s3://team-bucket/loopml")           # needs boto3: pip install 'loopml[s3]'
    S3Root('s3://team-bucket/loopml')
    """
    if not isinstance(root, (str, os.PathLike)):
        return root
    text = os.fspath(root)
    if text.startswith("s3://"):
        return S3Root(text)  # boto3, an optional extra, is imported when the root is made
    if "://" in text:
        raise ConfigError(
            f"Artifact root {text!r} is not supported: use a folder (e.g. ./.loopml/artifacts) or "
            "s3://bucket/prefix (an S3-compatible object store; set LOOPML_S3_ENDPOINT_URL for one that is not AWS)"
        )
    return LocalRoot(text)
