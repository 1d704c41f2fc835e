"""Names of the Celery tasks: the broker enqueues by name and never imports worker code."""

__all__ = ["RUN_INFERENCE", "STORE_OBJECTS"]

RUN_INFERENCE = "model_proxy.run_inference"
STORE_OBJECTS = "model_proxy.store_objects"  # store a succeeded job's DICOM objects again
