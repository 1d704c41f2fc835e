"""An example model API for model-proxy: the model contract, implemented small and in full.

It answers ``POST /segmentation``, ``POST /annotation`` and ``POST /prediction`` with a real
computation on the pixels it receives: every pixel whose modality value lies above a threshold
(the ``threshold`` query parameter, else the instance's mean) is marked, outlined and counted.
Model authors can read it top-down: :mod:`example_model.body` decodes the request body,
:mod:`example_model.instances` reads the DICOM files, :mod:`example_model.analysis` does the
computation and :mod:`example_model.documents` shapes the answer the viewer expects.

Run it with ``python -m example_model --host 127.0.0.1 --port 8011``.
"""

from model_proxy.example_model.app import create_app
from model_proxy.example_model.settings import ExampleModelSettings

__all__ = ["ExampleModelSettings", "create_app"]
