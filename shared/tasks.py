"""Names of the Celery tasks: the broker enqueues by name and never imports worker code."""

__all__ = ["DELIVER_WEBHOOKS", "RUN_INFERENCE", "STORE_OBJECTS"]

RUN_INFERENCE = "model_proxy.run_inference"
STORE_OBJECTS = "model_proxy.store_objects"  # store a succeeded job's DICOM objects again
DELIVER_WEBHOOKS = "model_proxy.deliver_webhooks"  # POST an ended job to one of its callbacks
