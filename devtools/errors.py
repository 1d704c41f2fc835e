"""Why a development part could not start: one small tree under :class:`DevtoolsError`."""

from __future__ import annotations

__all__ = ["DevtoolsError", "MissingBinaryError", "NotReadyError", "PortInUseError"]


class DevtoolsError(RuntimeError):
    """A part the tests, the benchmark or the demo need could not be started."""


class MissingBinaryError(DevtoolsError):
    """A system program (Orthanc, redis-server, chromium) is not installed."""

    def __init__(self, path: str, package: str) -> None:
        super().__init__(f"{path} is missing: apt-get install {package}")
        self.path = path
        self.package = package


class PortInUseError(DevtoolsError):
    """A fixed port that a part must listen on is already taken by another process."""

    def __init__(self, port: int, what: str) -> None:
        super().__init__(f"{what}: port {port} is already in use (stop whatever listens on it)")
        self.port = port


class NotReadyError(DevtoolsError):
    """A started process exited, or did not answer, before it was ready."""
