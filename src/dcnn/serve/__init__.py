"""Serving a trained model over HTTP (`dcnn serve`).

- :mod:`dcnn.serve.app`: :func:`~dcnn.serve.app.create_app` builds the FastAPI app (page, JSON API, health);
- :mod:`dcnn.serve.batching`: concurrent requests batched through the model;
- :mod:`dcnn.serve.uploads`: upload limits and safe decoding;
- :mod:`dcnn.serve.page`: the page people use;
- :mod:`dcnn.serve.server`: listening and running uvicorn.

The modules are imported where used (the CLI reads the defaults without importing FastAPI).
"""
