"""WADO-RS retrieval from one DICOMweb PACS, streamed instance by instance.

A source may carry :class:`SizeLimits`: an instance longer than ``instance`` bytes fails with
``pacs_instance_too_large``, and more than ``input`` bytes read with ``input_too_large``, both as
soon as the bytes arrive. A source made by :meth:`DicomWebSource.for_job` counts the input of all
its retrieves together; any other counts each retrieve alone.

A study-level retrieve may leave out series by Modality or by UID (those model-proxy stored;
:meth:`DicomWebSource.retrieve_study`):
the study's series are listed with QIDO-RS and only the others are retrieved, one after another,
as one stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

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
from model_proxy.shared.http import (
    Peer,
    Timeouts,
    pieces_as_they_arrive,
    tls_advice,
    translated_errors,
)

__all__ = ["RETRIEVE_ACCEPT", "DicomWebSource", "InstanceStream", "SeriesSummary"]

log = logging.getLogger(__name__)

RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"'
_CHUNK = 1 << 20
_STUDY_INSTANCES = "00201208"  # Number of Study Related Instances
_SERIES_INSTANCES = "00201209"  # Number of Series Related Instances
_SERIES_UID = "0020000E"
_MODALITY = "00080060"

Opener = Callable[[], requests.Response]
"""Opens one more retrieve whose parts follow those before it in the same stream."""


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a study as QIDO-RS lists it; ``modality`` None when the PACS omits it."""

    series_uid: str
    modality: str | None
    instances: int | None = None  # its NumberOfSeriesRelatedInstances, when the PACS gives it


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
        then: Sequence[Opener] = (),
    ) -> None:
        self._source = source
        self._response = response
        self._then = list(then)  # further retrieves, opened one by one as each ends
        # a study retrieved by its listed series: the instances each has (None: not given)
        self.series_counts: tuple[int | None, ...] | None = None
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
        yield from self._read_response()
        for opener in self._then:
            self._response.close()
            self._response = opener()
            yield from self._read_response()

    def _read_response(self) -> Iterator[bytes]:
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
        # Orthanc streams without Content-Length and closes the connection: read to EOF, each
        # piece as it arrives (an instance goes on to the model as soon as it is whole)
        chunks = pieces_as_they_arrive(self._response, _CHUNK)
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
        return self._stream(self._open(path, what), what)

    def retrieve_study(
        self,
        study_uid: str,
        skip_modalities: frozenset[str],
        skip_series: frozenset[str] = frozenset(),
    ) -> InstanceStream:
        """Open a WADO-RS retrieve of a study's instances, without its series whose Modality
        is in ``skip_modalities`` or whose UID is in ``skip_series``: when the study has such
        series, its other series are retrieved one after another; a study with nothing else
        fails with ``dicom_not_found``."""
        if not skip_modalities and not skip_series:
            return self.retrieve(study_uid)
        listed = self.list_series(study_uid)
        kept = [
            item
            for item in listed
            if item.modality not in skip_modalities and item.series_uid not in skip_series
        ]
        if len(kept) == len(listed):
            stream = self.retrieve(study_uid)
            counts = tuple(item.instances for item in listed)
            if None not in counts:  # else the study's own count still says it
                stream.series_counts = counts
            return stream
        if not kept:
            raise DicomNotFound(
                f"the study has only series models do not take "
                f"({', '.join(sorted({str(item.modality) for item in listed}))}) on server "
                f"{self.server_id}"
            )
        log.info(
            "server %s: the study retrieve leaves out %d of %d series (modality, our own)",
            self.server_id,
            len(listed) - len(kept),
            len(listed),
        )
        paths = [f"/studies/{study_uid}/series/{item.series_uid}" for item in kept]
        openers = [partial(self._open, path, "series") for path in paths[1:]]
        stream = self._stream(self._open(paths[0], "series"), "study", openers)
        stream.series_counts = tuple(item.instances for item in kept)
        return stream

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of a study with their Modality and instance count, from QIDO-RS
        ``/studies/{study}/series``."""
        url = f"{self._root}/studies/{study_uid}/series"
        fields = f"{_MODALITY},{_SERIES_INSTANCES}"
        response = self._get(url, "application/dicom+json", params={"includefield": fields})
        if response.status_code == 204:
            raise DicomNotFound(f"the study was not found on server {self.server_id}")
        if response.status_code != 200:
            response.close()
            raise self._status_error(response.status_code, "study")
        try:
            return [_series_summary(item) for item in response.json()]
        except (ValueError, LookupError, TypeError, AttributeError):
            raise PacsFailed(
                f"server {self.server_id} answered its study's series list with a body that "
                "is not DICOM JSON"
            ) from None

    def _open(self, path: str, what: str) -> requests.Response:
        """A streamed WADO-RS GET of ``path`` that answered 200; else our error for it."""
        response = self._get(self._root + path, RETRIEVE_ACCEPT, stream=True)
        if response.status_code != 200:
            response.close()
            raise self._status_error(response.status_code, what)
        return response

    def _stream(
        self, response: requests.Response, what: str, then: Sequence[Opener] = ()
    ) -> InstanceStream:
        limits = self.limits
        return InstanceStream(
            self,
            response,
            what,
            max_instance_bytes=limits.instance if limits else None,
            budget=self._budget or _InputBudget(limits.input if limits else None),
            then=then,
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

    def post(self, path: str, body: bytes, content_type: str, accept: str) -> requests.Response:
        """POST ``body`` to ``path`` under the DICOMweb root with this server's auth (renewed
        and sent once more when refused, as every GET), streamed: the caller reads and closes
        the answer. Failures to connect or answer become our errors."""
        return self._request(
            "POST", self._root + path, accept, stream=True, body=body, content_type=content_type
        )

    def _get(
        self,
        url: str,
        accept: str,
        *,
        params: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        return self._request("GET", url, accept, params=params, stream=stream)

    def _request(
        self,
        method: str,
        url: str,
        accept: str,
        *,
        params: dict[str, str] | None = None,
        stream: bool = False,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        """A request with this server's auth; refused (401/403) with a token that can be
        renewed, it is sent once more with the new one."""
        send = partial(self._send, method, url, accept, params, stream, body, content_type)
        response = send()
        if response.status_code in (401, 403):
            rejected = response.request.headers
            response.close()
            if self._auth.renew(rejected):
                response = send()
        return response

    def _send(
        self,
        method: str,
        url: str,
        accept: str,
        params: dict[str, str] | None,
        stream: bool,
        body: bytes | None,
        content_type: str | None,
    ) -> requests.Response:
        headers = {"Accept": accept, **self._auth.headers()}
        if content_type is not None:
            headers["Content-Type"] = content_type
        with self.translate_errors():
            return self._session.request(
                method,
                url,
                params=params,
                data=body,
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


def _series_summary(item: dict[str, dict[str, list[object]]]) -> SeriesSummary:
    """One QIDO-RS series entry; a Modality absent or empty is None."""
    values = item.get(_MODALITY, {}).get("Value") or [None]
    modality = values[0].strip().upper() if isinstance(values[0], str) else None
    counted = (item.get(_SERIES_INSTANCES, {}).get("Value") or [None])[0]
    instances = int(counted) if isinstance(counted, int | str) and str(counted).isdigit() else None
    return SeriesSummary(str(item[_SERIES_UID]["Value"][0]), modality or None, instances)
