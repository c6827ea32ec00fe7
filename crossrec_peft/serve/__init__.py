"""`crossrec-peft serve`: every loaded domain behind one HTTP server (FastAPI on uvicorn, the optional extra
`crossrec-peft[serve]`). Documented in docs/serving.md.

    settings.py  limits and batching options        schemas.py  request and response bodies (pydantic)
    errors.py    one JSON error shape, body limits   batcher.py  micro-batches off the event loop
    jobs.py      what a batch runs on the Recommender metrics.py Prometheus metrics
    app.py       the FastAPI application
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """The FastAPI application (see app.create_app); imported lazily, FastAPI being an optional extra."""
    from .app import create_app as build

    return build(*args, **kwargs)
