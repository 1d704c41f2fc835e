"""WADO-RS retrieval from one DICOMweb PACS, streamed instance by instance.

A source may carry :class:`SizeLimits`: an instance longer than ``instance`` bytes fails with
``pacs_instance_too_large``, and more than ``input`` bytes read with ``input_too_large``, both as
soon as the bytes arrive. A source made by :meth:`DicomWebSource.for_job` counts the input of all
its retrieves together; any other counts each retrieve alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import requests

from model_proxy.shared import errors
from model_proxy.shared.config.limits import SizeLimits
from model_proxy.shared.dicomweb.auth import PacsAuth
from model_proxy.shared.dicomweb.multipart import (
    MultipartError,
    PartTooLarge,
    boundary_from_content_type,
    iter_parts,
)
from model_proxy.shared.errors import (
    DicomNotFound,
    InputTooLarge,
    ModelProxyError,
    PacsFailed,
    PacsInstanceTooLarge,
)
from model_proxy.shared.http import Peer, Timeouts, tls_advice, translated_errors

__all__ = ["RETRIEVE_ACCEPT", "DicomWebSource", "InstanceStream"]

log = logging.getLogger(__name__)

RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"'
_CHUNK = 1 << 20
_STUDY_INSTANCES = "00201208"  # Number of Study Related Instances
_SERIES_INSTANCES = "00201209"  # Number of Series Related Instances


class _InputBudget:
    """The bytes that the retrieves sharing it may still read; None: no cap."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.limit is not None and self.spent > self.limit:
            raise InputTooLarge(
                f"the job's input is larger than {self.limit} bytes; raise maxInputBytes of "
                "the model in models.json (or MODEL_PROXY_MAX_INPUT_BYTES) to fetch it"
            )


class InstanceStream:
    """The instances of one retrieve, yielded as Part-10 bytes while the response streams in.

    The first instance is read when the stream is opened, so an empty answer fails before the
    model is called. Close it (or use it as a context manager) to release the connection.
    """

    def __init__(
        self,
        source: DicomWebSource,
        response: requests.Response,
        what: str,
        max_instance_bytes: int | None = None,
        budget: _InputBudget | None = None,
    ) -> None:
        self._source = source
        self._response = response
        self._what = what
        self._max_instance = max_instance_bytes
        self._budget = budget or _InputBudget(None)
        self.bytes_read = 0
        self.count = 0
        self.read_seconds = 0.0  # time spent waiting for the PACS
        self._parts = self._read_parts()
        try:
            self._first: bytes | None = next(self._parts)
        except StopIteration:
            self.close()
            raise DicomNotFound(
                f"the {what} has no instances on server {source.server_id}"
            ) from None
        except BaseException:
            self.close()  # a first instance too large or malformed: release the connection
            raise

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._parts

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> InstanceStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_parts(self) -> Iterator[bytes]:
        try:
            boundary = boundary_from_content_type(self._response.headers.get("Content-Type", ""))
        except MultipartError as exc:
            raise PacsFailed(
                f"server {self._source.server_id} did not answer with DICOM: {exc}"
            ) from None
        with self._source.translate_errors():
            try:
                for part in iter_parts(self._chunks(), boundary, self._max_instance):
                    self.count += 1
                    yield part
            except PartTooLarge as exc:
                raise PacsInstanceTooLarge(
                    f"server {self._source.server_id} sent an instance larger than "
                    f"{exc.limit} bytes; raise maxInstanceBytes of the model in models.json "
                    "(or MODEL_PROXY_MAX_INSTANCE_BYTES) to fetch it"
                ) from None
            except MultipartError as exc:
                raise PacsFailed(
                    f"server {self._source.server_id} sent a malformed multipart body: {exc}"
                ) from None

    def _chunks(self) -> Iterator[bytes]:
        # Orthanc streams without Content-Length and closes the connection: read to EOF.
        chunks = self._response.iter_content(chunk_size=_CHUNK)
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            self.read_seconds += time.perf_counter() - started
            if chunk is None:
                return
            self.bytes_read += len(chunk)
            self._budget.spend(len(chunk))
            yield chunk


class DicomWebSource:
    """One configured PACS: its DICOMweb root, an authenticated session, timeouts and the size
    caps of what it retrieves (None: none)."""

    def __init__(
        self,
        server_id: str,
        root: str,
        session: requests.Session,
        auth: PacsAuth,
        timeouts: Timeouts,
        limits: SizeLimits | None = None,
    ) -> None:
        self.server_id = server_id
        self.limits = limits
        self._root = root.rstrip("/")
        self._session = session
        self._auth = auth
        self._timeouts = timeouts
        self._budget: _InputBudget | None = None  # shared by every retrieve: see for_job
        self._peer = Peer(
            f"server {server_id}",
            timeout=errors.PacsTimeout,
            unreachable=errors.PacsUnreachable,
            failed=PacsFailed,
            failed_text="the transfer failed",
            tls=tls_advice(server_id, "DICOMweb endpoint"),
        )

    def for_job(self, limits: SizeLimits) -> DicomWebSource:
        """This source, on the same session, for the retrieves of one job: ``limits`` apply,
        and its ``input`` cap counts the bytes of all of them together."""
        source = DicomWebSource(
            self.server_id, self._root, self._session, self._auth, self._timeouts, limits
        )
        source._budget = _InputBudget(limits.input)
        return source

    def retrieve(
        self, study_uid: str, series_uid: str | None = None, instance_uid: str | None = None
    ) -> InstanceStream:
        """Open a WADO-RS retrieve of a study, a series or one instance."""
        path = f"/studies/{study_uid}"
        what = "study"
        if series_uid is not None:
            path += f"/series/{series_uid}"
            what = "series"
            if instance_uid is not None:
                path += f"/instances/{instance_uid}"
                what = "instance"
        response = self._get(self._root + path, RETRIEVE_ACCEPT, stream=True)
        if response.status_code != 200:
            response.close()
            raise self._status_error(response.status_code, what)
        limits = self.limits
        return InstanceStream(
            self,
            response,
            what,
            max_instance_bytes=limits.instance if limits else None,
            budget=self._budget or _InputBudget(limits.input if limits else None),
        )

    def count_instances(self, study_uid: str, series_uid: str | None = None) -> int | None:
        """How many instances a study or series has, from QIDO-RS; None when unknown."""
        if series_uid is None:
            url = f"{self._root}/studies"
            query = {"StudyInstanceUID": study_uid, "includefield": _STUDY_INSTANCES}
            tag = _STUDY_INSTANCES
        else:
            url = f"{self._root}/studies/{study_uid}/series"
            query = {"SeriesInstanceUID": series_uid, "includefield": _SERIES_INSTANCES}
            tag = _SERIES_INSTANCES
        try:
            response = self._get(url, "application/dicom+json", params=query)
            matches = response.json() if response.status_code == 200 else []
            return int(matches[0][tag]["Value"][0]) if len(matches) == 1 else None
        except (ModelProxyError, ValueError, LookupError, TypeError):
            return None

    def _get(
        self,
        url: str,
        accept: str,
        *,
        params: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """GET with this server's auth; refused (401/403) with a token that can be renewed, the
        request is sent once more with the new one."""
        response = self._send(url, accept, params, stream)
        if response.status_code in (401, 403):
            rejected = response.request.headers
            response.close()
            if self._auth.renew(rejected):
                response = self._send(url, accept, params, stream)
        return response

    def _send(
        self, url: str, accept: str, params: dict[str, str] | None, stream: bool
    ) -> requests.Response:
        headers = {"Accept": accept, **self._auth.headers()}
        with self.translate_errors():
            return self._session.get(
                url,
                params=params,
                headers=headers,
                stream=stream,
                timeout=self._timeouts.as_requests(),
            )

    def _status_error(self, status: int, what: str) -> Exception:
        if status == 404:
            return DicomNotFound(f"the {what} was not found on server {self.server_id}")
        if status in (401, 403):
            return errors.PacsAuthFailed(
                f"server {self.server_id} refused access (HTTP {status}); "
                "check its authType and credentials in servers.json"
            )
        return PacsFailed(f"server {self.server_id} answered HTTP {status}", status=status)

    def translate_errors(self) -> AbstractContextManager[None]:
        """Turn requests' exceptions into ours, naming the server and nothing secret."""
        return translated_errors(self._peer)
