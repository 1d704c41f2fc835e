"""The shapes of servers.json and models.json, field for field as the original proxy reads them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "AuthType",
    "DataFilterSpec",
    "Level",
    "ModelConfig",
    "ResultObject",
    "ServerConfig",
    "StoreConfig",
    "Task",
    "Transport",
]

_LO = r"^[^\\\x00-\x1f\x7f]*[^\\\s\x00-\x1f\x7f][^\\\x00-\x1f\x7f]*$"
"""A DICOM LO value: no backslash, no control character, not blank."""


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Task(StrEnum):
    SEGMENTATION = "segmentation"
    ANNOTATION = "annotation"
    PREDICTION = "prediction"

    @property
    def route_prefix(self) -> str:
        """The viewer's route for this task: ``segmentation`` is served at ``/segmentations``."""
        return f"{self.value}s"


class Level(StrEnum):
    """The levels a model ``supports``, spelt as in models.json."""

    STUDY = "/studies"
    SERIES = "/studies/series"
    INSTANCE = "/studies/series/instances"


class Transport(StrEnum):
    """How a model receives the instances (model-contract §2 and §6)."""

    JSON = "json"  # the zhiva body: each instance as the JSON text of its byte values
    MULTIPART = "multipart"  # multipart/related; type="application/dicom": the files as they are


class ResultObject(StrEnum):
    """A DICOM object a model's answers are made into (``store.objects`` in models.json)."""

    SEG = "seg"  # a Segmentation, from a segmentation answer
    SR = "sr"  # a TID 1500 Measurement Report, from annotations and metadata


class AuthType(StrEnum):
    NONE = ""
    BASIC = "basicAuth"
    TOKEN = "token"
    ZHIVA = "zhivaAuth"


class DataFilterSpec(_CamelModel):
    """One input a model declares: a series (at study level) or an instance (at series level)."""

    data_key: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    title: str = ""
    description: str | None = None
    data_filter: tuple[DataFilterSpec, ...] = ()


class _TlsOptions(_CamelModel):
    """How the HTTPS certificate of a server or model is verified: ``tlsVerify`` and
    ``caBundle``, alike in servers.json and models.json."""

    tls_verify: bool = True
    ca_bundle: str | None = None

    @model_validator(mode="after")
    def _ca_bundle_exists(self) -> Self:
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ValueError(f"caBundle {self.ca_bundle!r} is not a readable file")
        return self

    @property
    def tls_verification(self) -> bool | str:
        """What requests' ``verify`` takes: a CA bundle path, or whether to verify at all."""
        return self.ca_bundle if self.ca_bundle and self.tls_verify else self.tls_verify


class StoreConfig(_CamelModel):
    """``store`` of a models.json entry: which DICOM objects the model's answers become, and
    the servers.json key of the PACS they are meant for (default: the request's server)."""

    server: str | None = Field(default=None, min_length=1)
    objects: tuple[ResultObject, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _objects_once(self) -> Self:
        if len(set(self.objects)) != len(self.objects):
            raise ValueError("objects names an object twice")
        return self


class ModelConfig(_TlsOptions):
    """One entry of models.json."""

    uri: str = Field(pattern=r"^https?://")
    task: Task
    supports: tuple[Level, ...] = Field(min_length=1)
    status_uri: str | None = Field(default=None, pattern=r"^https?://")
    data_filter: tuple[DataFilterSpec, ...] = ()
    # model-proxy's own, all optional: the model's identity in the DICOM objects made from its
    # answers (default: the key, version and manufacturer "unknown"); DICOM LO values
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=_LO)
    version: str | None = Field(default=None, min_length=1, max_length=64, pattern=_LO)
    manufacturer: str | None = Field(default=None, min_length=1, max_length=64, pattern=_LO)
    # model-proxy's own, optional: the DICOM objects made from each answer at the end of a job
    store: StoreConfig | None = None
    # model-proxy's own, optional: the body's format; "json" is the zhiva body every model takes
    transport: Transport = Transport.JSON
    # model-proxy's own, all optional: scheduling of this model's jobs
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    max_concurrency: int | None = Field(default=None, gt=0)
    time_limit: float | None = Field(default=None, gt=0)
    max_queued: int | None = Field(default=None, gt=0)
    # model-proxy's own, all optional: size caps of this model's jobs (else the settings')
    max_instance_bytes: int | None = Field(default=None, gt=0)
    max_input_bytes: int | None = Field(default=None, gt=0)
    max_answer_bytes: int | None = Field(default=None, gt=0)
    # model-proxy's own, optional: also send a study's SEG, SR and other non-image series
    include_non_image_series: bool = False
    # model-proxy's own, optional: also send the series model-proxy itself stored in the study
    include_own_results: bool = False

    @model_validator(mode="after")
    def _objects_fit_task(self) -> Self:
        objects = self.store.objects if self.store is not None else ()
        if ResultObject.SEG in objects and self.task is not Task.SEGMENTATION:
            raise ValueError(
                f'store: a "seg" object needs task "segmentation", not "{self.task.value}"'
            )
        return self


class ServerConfig(_TlsOptions):
    """One entry of servers.json: a DICOMweb PACS and how to sign in to it."""

    uri: str = Field(pattern=r"^https?://")
    is_default: bool = False
    status_uri: str | None = Field(default=None, pattern=r"^https?://")
    auth_type: AuthType = AuthType.NONE
    login: str | None = None
    password: SecretStr | None = None
    auth_token: SecretStr | None = None
    sign_in_server: str | None = Field(default=None, pattern=r"^https?://")
    sign_in_token_server: str | None = Field(default=None, pattern=r"^https?://")
    refresh_server: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="before")
    @classmethod
    def _token_is_auth_token(cls, data: object) -> object:
        """The original's schema block calls the field ``token``; its examples say ``authToken``."""
        if isinstance(data, dict) and "token" in data:
            data = dict(data)
            token = data.pop("token")
            data.setdefault("authToken", token)
        return data

    @model_validator(mode="after")
    def _auth_fields_present(self) -> ServerConfig:
        missing: list[str] = []
        if self.auth_type is AuthType.BASIC:
            missing = [f for f in ("login", "password") if getattr(self, f) is None]
        elif self.auth_type is AuthType.TOKEN:
            missing = [
                name
                for name, value in (
                    ("authToken", self.auth_token),
                    ("signInTokenServer", self.sign_in_token_server),
                )
                if value is None
            ]
        elif self.auth_type is AuthType.ZHIVA:
            if self.sign_in_token_server is None:
                missing.append("signInTokenServer")
            if self.auth_token is None:
                missing += [
                    name
                    for name, value in (
                        ("login", self.login),
                        ("password", self.password),
                        ("signInServer", self.sign_in_server),
                    )
                    if value is None
                ]
        if missing:
            raise ValueError(f"authType {self.auth_type.value!r} needs {', '.join(missing)}")
        return self

    @property
    def dicomweb_root(self) -> str:
        return self.uri.rstrip("/")
