"""What the routes take from the application: its settings and its log of received requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from model_proxy.example_model.received import ReceivedLog
from model_proxy.example_model.settings import ExampleModelSettings

__all__ = ["ReceivedLogDep", "SettingsDep"]


def get_settings(request: Request) -> ExampleModelSettings:
    settings: ExampleModelSettings = request.app.state.settings
    return settings


def get_received_log(request: Request) -> ReceivedLog:
    log: ReceivedLog = request.app.state.received
    return log


SettingsDep = Annotated[ExampleModelSettings, Depends(get_settings)]
ReceivedLogDep = Annotated[ReceivedLog, Depends(get_received_log)]
