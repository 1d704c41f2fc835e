"""What makes two viewer requests the same job: the fingerprint.

Two requests share a job, and a stored answer, when the worker would do the same work for both:
the same model and server, the same resolved input plan (:func:`~model_proxy.shared.inputs.
plan_inputs`: undeclared data filters and ones the level ignores play no part), and the same
effective settings of the model and the server. A changed server ``uri`` or credentials, or a
model ``uri``, therefore changes the fingerprint, and yesterday's answer is not served for it.

Secrets enter only as their SHA-256 inside the digest; the fingerprint is a hex digest that
never holds a setting in clear.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, SecretStr

from model_proxy.shared.config.schema import ModelConfig, ServerConfig
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance
from model_proxy.shared.request import InferenceRequest

__all__ = ["request_fingerprint", "settings_digest"]

# Fields that decide when or whether a job runs, not what its answer is.
_MODEL_SCHEDULING = frozenset(
    {"status_uri", "queue", "max_concurrency", "time_limit", "max_queued", "data_filter"}
)
_SERVER_SCHEDULING = frozenset({"is_default", "status_uri"})


def settings_digest(model: ModelConfig, server: ServerConfig) -> str:
    """A digest of every setting of the model and the server that can change an answer
    (secrets hashed). Fields added later count unless listed as scheduling-only."""
    material = {
        "model": _settings(model, _MODEL_SCHEDULING),
        "server": _settings(server, _SERVER_SCHEDULING),
    }
    return _digest(material)


def request_fingerprint(
    request: InferenceRequest, plan: InputPlan, model: ModelConfig, server: ServerConfig
) -> str:
    """The digest identical requests share: task, model, server, resolved plan and settings."""
    material = {
        "task": request.task.value,
        "model": request.model_id,
        "server": request.server_id,
        "level": request.level.value,
        "plan": _plan(plan),
        "settings": settings_digest(model, server),
    }
    return _digest(material)


def _settings(config: BaseModel, skip: frozenset[str]) -> dict[str, Any]:
    return {
        name: _value(getattr(config, name))
        for name in sorted(type(config).model_fields)
        if name not in skip
    }


def _value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return {"sha256": hashlib.sha256(value.get_secret_value().encode()).hexdigest()}
    if isinstance(value, BaseModel):
        return _settings(value, frozenset())
    if isinstance(value, tuple | list):
        return [_value(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # enums, paths


def _plan(plan: InputPlan) -> Any:
    if isinstance(plan, InstanceList):
        return {"instances": [plan.study_uid, plan.series_uid]}
    if isinstance(plan, SingleInstance):
        return {"instance": [plan.study_uid, plan.series_uid, plan.instance_uid]}
    assert isinstance(plan, Keyed)
    return {"keyed": [[key, _plan(entry)] for key, entry in plan.entries]}


def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
