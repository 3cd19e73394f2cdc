"""The E2B face: E2B's control plane and sandbox traffic (envd, the code interpreter), so the
unmodified E2B SDKs and the tools built on them run on sessionpool's sessions."""

from sessionpool.faces.e2b.face import E2bFace

__all__ = ["E2bFace"]
