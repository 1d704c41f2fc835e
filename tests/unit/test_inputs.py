"""Which DICOM data a model receives, and in which shape (model-contract §2 and §2.1)."""

from __future__ import annotations

from typing import Any

import pytest

from model_proxy.shared.config.schema import Level, ModelConfig, Task
from model_proxy.shared.errors import InvalidDataFilter
from model_proxy.shared.inputs import (
    NON_IMAGE_MODALITIES,
    InstanceList,
    Keyed,
    SingleInstance,
    plan_inputs,
)
from model_proxy.shared.request import DataFilter, InferenceRequest

STUDY = "1.2.3"
SERIES = "1.2.3.4"
INSTANCE = "1.2.3.4.5"


def model(*, data_filter: list[dict[str, Any]] | None = None, **extra: Any) -> ModelConfig:
    config: dict[str, Any] = {
        **extra,
        "uri": "http://model:8011/predict",
        "task": "segmentation",
        "supports": ["/studies", "/studies/series", "/studies/series/instances"],
    }
    if data_filter is not None:
        config["dataFilter"] = data_filter
    return ModelConfig.model_validate(config)


def request(
    level: Level, *filters: DataFilter, series: str | None = None, instance: str | None = None
) -> InferenceRequest:
    return InferenceRequest(
        task=Task.SEGMENTATION,
        model_id="cf8063dc-d4bb-4b68-8e74-eba77c248c8b",
        server_id="b5208f48-f748-4339-9402-d1148dab571e",
        level=level,
        study_uid=STUDY,
        series_uid=series,
        instance_uid=instance,
        data_filters=filters,
    )


SERIES_KEYS = [
    {"dataKey": "series-one", "title": "Pre-contrast"},
    {"dataKey": "series-two", "title": "Post-contrast"},
]
INSTANCE_KEYS = [{"dataKey": "top", "title": "Top"}, {"dataKey": "bottom", "title": "Bottom"}]
NESTED_KEYS = [
    {"dataKey": "series-one", "title": "T1"},
    {"dataKey": "slices", "title": "Slices", "dataFilter": INSTANCE_KEYS},
]


# --- without data filters -----------------------------------------------------------------------


def test_study_without_filters_is_every_image_instance_of_the_study() -> None:
    plan = plan_inputs(request(Level.STUDY), model())
    assert plan == InstanceList(STUDY, skip_modalities=NON_IMAGE_MODALITIES)
    assert {"SEG", "SR", "KO", "PR", "RTSTRUCT", "DOC"} <= NON_IMAGE_MODALITIES
    assert not {"CT", "MR", "PT", "CR", "DX", "US", "MG", "OT", "SM"} & NON_IMAGE_MODALITIES


def test_a_model_may_take_a_studys_non_image_series() -> None:
    plan = plan_inputs(request(Level.STUDY), model(includeNonImageSeries=True))
    assert plan == InstanceList(STUDY, skip_modalities=frozenset())


def test_a_series_the_request_names_is_sent_whatever_its_modality() -> None:
    plan = plan_inputs(request(Level.SERIES, series=SERIES), model())
    assert plan == InstanceList(STUDY, SERIES, skip_modalities=frozenset())
    study_filters = model(data_filter=[{"dataKey": "one", "title": "One"}])
    keyed = plan_inputs(request(Level.STUDY, DataFilter(data_key="one", uuid="9.9")), study_filters)
    assert keyed == Keyed((("one", InstanceList(STUDY, "9.9", skip_modalities=frozenset())),))


def test_series_without_filters_is_every_instance_of_the_series() -> None:
    plan = plan_inputs(request(Level.SERIES, series=SERIES), model())
    assert plan == InstanceList(STUDY, SERIES)


def test_instance_is_a_single_instance() -> None:
    plan = plan_inputs(request(Level.INSTANCE, series=SERIES, instance=INSTANCE), model())
    assert plan == SingleInstance(STUDY, SERIES, INSTANCE)


def test_instance_level_ignores_declared_filters() -> None:
    plan = plan_inputs(
        request(Level.INSTANCE, series=SERIES, instance=INSTANCE),
        model(data_filter=SERIES_KEYS),
    )
    assert plan == SingleInstance(STUDY, SERIES, INSTANCE)


def test_filters_sent_to_a_model_that_declares_none_are_ignored() -> None:
    plan = plan_inputs(request(Level.STUDY, DataFilter(data_key="x", uuid="9.9")), model())
    assert plan == InstanceList(STUDY, skip_modalities=NON_IMAGE_MODALITIES)


# --- with data filters --------------------------------------------------------------------------


def test_study_with_series_filters_in_the_order_the_model_declares() -> None:
    plan = plan_inputs(
        request(
            Level.STUDY,
            DataFilter(data_key="series-two", uuid="1.2.3.20"),
            DataFilter(data_key="undeclared", uuid="1.2.3.99"),
            DataFilter(data_key="series-one", uuid="1.2.3.10"),
        ),
        model(data_filter=SERIES_KEYS),
    )
    assert plan == Keyed(
        (
            ("series-one", InstanceList(STUDY, "1.2.3.10")),
            ("series-two", InstanceList(STUDY, "1.2.3.20")),
        )
    )


def test_series_with_instance_filters_belong_to_the_path_series() -> None:
    plan = plan_inputs(
        request(
            Level.SERIES,
            DataFilter(data_key="bottom", uuid="1.2.3.4.9"),
            DataFilter(data_key="top", uuid="1.2.3.4.1"),
            series=SERIES,
        ),
        model(data_filter=INSTANCE_KEYS),
    )
    assert plan == Keyed(
        (
            ("top", SingleInstance(STUDY, SERIES, "1.2.3.4.1")),
            ("bottom", SingleInstance(STUDY, SERIES, "1.2.3.4.9")),
        )
    )


def test_nested_instance_filters_belong_to_their_parent_series() -> None:
    slices = DataFilter(
        data_key="slices",
        uuid="1.2.3.20",
        data_filter=(
            DataFilter(data_key="bottom", uuid="1.2.3.20.9"),
            DataFilter(data_key="top", uuid="1.2.3.20.1"),
        ),
    )
    plan = plan_inputs(
        request(Level.STUDY, slices, DataFilter(data_key="series-one", uuid="1.2.3.10")),
        model(data_filter=NESTED_KEYS),
    )
    assert plan == Keyed(
        (
            ("series-one", InstanceList(STUDY, "1.2.3.10")),
            (
                "slices",
                Keyed(
                    (
                        ("top", SingleInstance(STUDY, "1.2.3.20", "1.2.3.20.1")),
                        ("bottom", SingleInstance(STUDY, "1.2.3.20", "1.2.3.20.9")),
                    )
                ),
            ),
        )
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ((), "series-one, series-two"),
        ((DataFilter(data_key="series-two", uuid="1.2.3.20"),), "series-one"),
        ((DataFilter(data_key="Series-One", uuid="1.2.3.10"),), "series-one, series-two"),
    ],
)
def test_a_missing_declared_key_names_every_missing_key(
    given: tuple[DataFilter, ...], missing: str
) -> None:
    with pytest.raises(InvalidDataFilter) as caught:
        plan_inputs(request(Level.STUDY, *given), model(data_filter=SERIES_KEYS))
    assert caught.value.message == (
        f"this model needs data-filters for the keys {missing}; "
        'each as {"dataKey": ..., "uuid": <UID>}'
    )


def test_a_missing_nested_key_names_its_parent() -> None:
    given = (
        DataFilter(data_key="series-one", uuid="1.2.3.10"),
        DataFilter(
            data_key="slices",
            uuid="1.2.3.20",
            data_filter=(DataFilter(data_key="top", uuid="1.2.3.20.1"),),
        ),
    )
    with pytest.raises(InvalidDataFilter) as caught:
        plan_inputs(request(Level.STUDY, *given), model(data_filter=NESTED_KEYS))
    assert caught.value.message == (
        "this model needs data-filters 'slices' dataFilter for the keys bottom; "
        'each as {"dataKey": ..., "uuid": <UID>}'
    )
