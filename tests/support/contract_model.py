"""A model API written by someone else to the model contract, the way zhiva's reference models are.

Typed FastAPI body parameters (``List[str]``, ``Dict[str, Dict[str, List[str]]]``, ``str``),
instances decoded with ``pydicom.dcmread(io.BytesIO(bytes(json.loads(instance))))``, and the
answer built with ``orjson.dumps`` and returned through ``ORJSONResponse``, which encodes the
document once more as a JSON string (model-contract §3.1). model-proxy must work with it unchanged.

Run: ``python -m tests.support.contract_model PORT``.
"""

from __future__ import annotations

import io
import json
import sys

import orjson
import pydicom
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import ORJSONResponse


def _frames(instances: list[str]) -> dict[str, dict[str, dict[str, object]]]:
    document: dict[str, dict[str, dict[str, object]]] = {}
    for instance in instances:
        ds = pydicom.dcmread(io.BytesIO(bytes(json.loads(instance))))
        study = document.setdefault(str(ds.StudyInstanceUID), {})
        series = study.setdefault(str(ds.SeriesInstanceUID), {})
        series[str(ds.SOPInstanceUID)] = {
            "metadata": [{"dataType": "number", "value": int(ds.Rows), "title": "Rows"}]
        }
    return document


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/single-series-endpoint/predict", response_class=ORJSONResponse)
    def single_series(items: list[str]) -> bytes:
        return orjson.dumps(_frames(items))

    @app.post("/multiple-series-endpoint/predict", response_class=ORJSONResponse)
    def multiple_series(items: dict[str, dict[str, list[str]]]) -> bytes:
        return orjson.dumps(_frames(items["series-one"]["data"] + items["series-two"]["data"]))

    @app.post("/single-instance-endpoint/predict", response_class=ORJSONResponse)
    def single_instance(item: str = Body(...)) -> bytes:
        return orjson.dumps(_frames([item]))

    return app


if __name__ == "__main__":
    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
