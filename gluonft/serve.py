"""A small prediction service (Flask, the optional ``serve`` extra).

    POST /predict   an image as the multipart file field ``image`` or as the raw request body
                    -> {"class", "index", "probability", "probabilities": {name: p}}
    GET  /health    -> {"status": "ok", "model", "classes", "image_size", "params"}

A bad upload (empty, not an image, larger than ``max_bytes``) gets a 4xx JSON answer
``{"error": "..."}`` saying what was wrong; the server keeps running. Run it with
``python -m gluonft serve MODEL_DIR --port 8000``, or put `create_app`'s app behind any WSGI
server.
"""
from __future__ import annotations

import threading

__all__ = ["create_app", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def create_app(clf, *, max_bytes: int = DEFAULT_MAX_BYTES, tta: bool = False):
    """A Flask app serving predictions of ``clf``.

    Args:
        clf: a `gluonft.Classifier` (e.g. from `load_classifier`) or an `Ensemble`.
        max_bytes: largest accepted upload; a larger one gets 413.
        tta: average each prediction over the image and its mirror.

    Returns:
        the Flask application (a WSGI callable).

    Raises:
        ImportError: Flask is not installed (``pip install 'gluonft[serve]'``).

    Example:
        >>> app = create_app(load_classifier("models/clothes"))  # doctest: +SKIP
        >>> app.run(port=8000)  # doctest: +SKIP
        $ curl -F image=@shirt.jpg localhost:8000/predict
        {"class": "shirt", "index": 7, "probability": 0.93, "probabilities": {...}}
    """
    try:
        from flask import Flask, jsonify, request
        from werkzeug.exceptions import HTTPException
    except ImportError:
        raise ImportError("the prediction service needs Flask: pip install 'gluonft[serve]'") \
            from None
    from .classifier import _members, predict_bytes

    members = _members(clf)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    first = members[0]
    health = {"status": "ok",
              "model": "+".join(m.backbone for m in members),
              "classes": list(first.classes),
              "image_size": [m.image_size for m in members] if len(members) > 1
              else first.image_size,
              "params": sum(m.params for m in members)}
    # MXNet's imperative calls are not meant to run in several threads at once; requests are
    # served in threads, predictions one at a time.
    lock = threading.Lock()
    app = Flask("gluonft.serve")
    app.config["MAX_CONTENT_LENGTH"] = max_bytes

    def error(status: int, message: str):
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        return response

    @app.get("/health")
    def _health():
        return jsonify(health)

    @app.post("/predict")
    def _predict():
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("image")
            if upload is None:
                fields = sorted(request.files) + sorted(request.form)
                return error(400, "expected the image in the multipart file field 'image'"
                                  + (f", got the field(s) {', '.join(fields)}" if fields else ""))
            data = upload.read()
        else:
            data = request.get_data()
        if not data:
            return error(400, "the upload is empty: send an image (JPEG, PNG ...) as the "
                              "multipart field 'image' or as the request body")
        try:
            with lock:
                row = predict_bytes(clf, data, tta=tta)
        except ValueError as bad:
            return error(415, f"{bad}")
        row.pop("file", None)
        return jsonify(row)

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if exc.code == 413:
            return error(413, f"the upload is larger than the limit of {max_bytes:,} bytes")
        return error(exc.code or 500, exc.description or exc.name)

    return app
