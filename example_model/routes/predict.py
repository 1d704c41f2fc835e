"""``POST /segmentation``, ``POST /annotation`` and ``POST /prediction``: the model contract.

model-proxy POSTs to the ``uri`` of models.json verbatim, so the query parameters below can be
written into that ``uri`` (e.g. ``http://127.0.0.1:8011/segmentation?wrap=true``):

* ``threshold`` — mark values above this (modality units) instead of each instance's mean;
* ``delay`` — seconds to wait before answering, to test slow models;
* ``wrap`` — answer with the document encoded once more as a JSON string (model-contract §3.1);
* ``fail`` — answer with this HTTP status (400-599) and ``{"detail": "simulated failure"}``.

The body is told apart by its Content-Type: ``multipart/related`` is the multipart transport
(the DICOM files as parts, read as they stream in by :mod:`example_model.multipart`), anything
else the zhiva JSON body, read raw. Both are decoded by :mod:`example_model.body`, so every shape
of the contract is accepted and answered alike; a malformed body is answered with 422 and
``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from model_proxy.example_model.body import ModelInput, multipart_input, parse_body
from model_proxy.example_model.deps import ReceivedLogDep, SettingsDep
from model_proxy.example_model.documents import Task
from model_proxy.example_model.inference import ReceivedBody, answer, read_instances
from model_proxy.example_model.multipart import MultipartParser, Part, boundary_of, is_multipart
from model_proxy.example_model.received import ReceivedLog
from model_proxy.example_model.settings import ExampleModelSettings

__all__ = ["PredictOptions", "router"]

router = APIRouter(tags=["model"])

_JSON = "application/json"
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": (
            "A JSON array of instance strings, one instance string, or an object of data "
            'filters {"<dataKey>": {"data": ...}}. An instance string is the JSON text of the '
            'DICOM Part-10 file\'s byte values, e.g. "[0,0,1,255]". Or the DICOM files '
            "themselves, as the application/dicom parts of a multipart/related body, each "
            "with its data-filter key in an X-Model-Proxy-Data-Key header."
        ),
        "content": {
            _JSON: {"schema": {}},
            "multipart/related": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@dataclass(frozen=True)
class PredictOptions:
    threshold: float | None
    delay: float
    wrap: bool
    fail: int | None


def predict_options(
    threshold: Annotated[
        float | None,
        Query(allow_inf_nan=False, description="Mark values above this, not above the mean."),
    ] = None,
    delay: Annotated[
        float, Query(ge=0, le=3600, description="Seconds to wait before answering.")
    ] = 0.0,
    wrap: Annotated[bool, Query(description="Answer with the JSON encoded as a string.")] = False,
    fail: Annotated[
        int | None, Query(ge=400, le=599, description="Answer with this HTTP status.")
    ] = None,
) -> PredictOptions:
    return PredictOptions(threshold=threshold, delay=delay, wrap=wrap, fail=fail)


OptionsDep = Annotated[PredictOptions, Depends(predict_options)]


@router.post("/segmentation", openapi_extra=_BODY_DOC)
async def segmentation(
    request: Request, options: OptionsDep, settings: SettingsDep, log: ReceivedLogDep
) -> Response:
    """A segment per instance whose ``points`` are its Rows x Columns mask of marked pixels."""
    return await _predict(Task.SEGMENTATION, request, options, settings, log)


@router.post("/annotation", openapi_extra=_BODY_DOC)
async def annotation(
    request: Request, options: OptionsDep, settings: SettingsDep, log: ReceivedLogDep
) -> Response:
    """A region of interest per instance: the convex hull of its marked pixels."""
    return await _predict(Task.ANNOTATION, request, options, settings, log)


@router.post("/prediction", openapi_extra=_BODY_DOC)
async def prediction(
    request: Request, options: OptionsDep, settings: SettingsDep, log: ReceivedLogDep
) -> Response:
    """The number of marked voxels per instance; their volume and share per series."""
    return await _predict(Task.PREDICTION, request, options, settings, log)


async def _predict(
    task: Task,
    request: Request,
    options: PredictOptions,
    settings: ExampleModelSettings,
    log: ReceivedLog,
) -> Response:
    received = await _receive(request)
    log.record(request.url.path, received)
    if options.delay:
        await asyncio.sleep(options.delay)
    if options.fail is not None:
        return Response(b'{"detail":"simulated failure"}', options.fail, media_type=_JSON)
    content = await run_in_threadpool(
        answer,
        task,
        received.instances,
        settings,
        threshold=options.threshold,
        wrap=options.wrap,
    )
    return Response(content, media_type=_JSON)


async def _receive(request: Request) -> ReceivedBody:
    """The body decoded and its files read, whichever transport carried them."""
    content_type = request.headers.get("content-type", "")
    model_input: ModelInput
    if is_multipart(content_type):
        parser = MultipartParser(boundary_of(content_type))
        parts: list[Part] = []
        async for chunk in request.stream():
            parts += parser.feed(chunk)
        parser.close()
        model_input = multipart_input(parts, request.headers.get("x-model-proxy-level"))
    else:
        model_input = await run_in_threadpool(parse_body, await request.body())
    return await run_in_threadpool(read_instances, model_input)
