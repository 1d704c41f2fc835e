"""The series model-proxy stored, per study in Redis: only those the PACS confirmed, kept for
the TTL the settings give, and left out of a study-level plan unless the model asks for them."""

from __future__ import annotations

import fakeredis
import redis

from model_proxy.shared.config.schema import ModelConfig
from model_proxy.shared.inputs import InstanceList
from model_proxy.shared.jobs import JobOutput
from model_proxy.workers.result_series import OwnSeries

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _output(series: str, stored: bool) -> JobOutput:
    return JobOutput(
        format="seg", series_instance_uid=series, sop_instance_uid=series + ".1", stored=stored
    )


def test_only_the_series_the_pacs_stored_are_remembered_for_the_ttl(client: redis.Redis) -> None:
    own = OwnSeries(client, "mp", ttl_seconds=600)
    assert own.of_study(STUDY) == frozenset()
    own.remember(STUDY, [_output("1.2.3", True), _output("1.2.4", False)])
    own.remember(STUDY, [_output("1.2.5", True)])
    assert own.of_study(STUDY) == {"1.2.3", "1.2.5"}
    assert 590 < client.ttl("mp:own-series:" + STUDY) <= 600
    own.remember(STUDY, [_output("1.2.6", False)])  # nothing stored: nothing written
    assert own.of_study(STUDY) == {"1.2.3", "1.2.5"}


def test_a_redis_failure_when_remembering_is_no_error() -> None:
    broken = fakeredis.FakeRedis()
    broken.connected = False
    OwnSeries(broken, "mp", 600).remember(STUDY, [_output("1.2.3", True)])


def test_include_own_results_is_a_models_json_field() -> None:
    entry = {"uri": "http://m/x", "task": "segmentation", "supports": ["/studies"]}
    assert ModelConfig.model_validate(entry).include_own_results is False
    model = ModelConfig.model_validate({**entry, "includeOwnResults": True})
    assert model.include_own_results is True
    assert InstanceList(STUDY).skip_series == frozenset()
