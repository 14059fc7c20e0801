"""This project's Tango workspace: JSON records, verified artifact directories and leases, on a local
path or any fsspec URL (``s3://``, ``gs://``, a shared filesystem)."""

from .workspace import OlmoWorkspace, WorkspaceError

__all__ = ["OlmoWorkspace", "WorkspaceError"]
