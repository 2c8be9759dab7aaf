"""A small prediction service (Flask app, served by waitress: the optional ``serve`` extra).

    GET  /          a page to upload or drop a photo and see the top-5 classes with their
                    probabilities and where the model looked (Grad-CAM); no build step, no
                    CDN: the page is one file with its script inline, it works offline
    POST /predict   an image as the multipart file field ``image`` or as the raw request body
                    -> {"class", "index", "label", "probability", "probabilities": {name: p}}
                    ``?cam=1`` adds "cam": the photo with the Grad-CAM overlay of the
                    predicted class, a PNG ``data:`` URI at most `CAM_SIDE` pixels a side
    GET  /health    -> {"status": "ok", "model", "classes", "image_size", "params"}

A bad upload gets a 4xx JSON answer ``{"error": "...", "status": N}`` saying what was wrong,
and the server keeps running: 400 empty or no ``image`` field, 413 more than ``max_bytes``
(also for chunked uploads, which carry no length), more than ``max_pixels`` or more decoding
memory than ``max_decode_bytes`` (both read from the image header before anything is decoded:
a 27 KB PNG can hold 15000 x 15000 pixels; an unreadable header or one Pillow calls a
decompression bomb is refused too, never passed on to the decoder), 415 not a decodable image.

Every prediction runs on one long-lived inference thread, whatever thread the request came in
on. MXNet keeps per-thread state (engine and operator caches) that it never frees: served by
a thread per request, the process grew by ~5 MB per request without end. One MXNet thread
keeps memory flat, and serialises predictions, which MXNet's imperative API needs anyway.
``python -m gluonft serve`` runs the app under waitress, a production WSGI server with a
fixed pool of request threads (pure Python, no fork: the model is loaded once).
"""
from __future__ import annotations

import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from .compat import DECODE_MAX_PIXELS, OPENCV_LIMIT_VARIABLE
from .gradcam import grad_cam, overlay
from .pages import data_uri, render
from .predict import members_of, predict_bytes
from .version import __version__

__all__ = ["create_app", "serve", "image_header", "cam_overlay", "DEFAULT_MAX_BYTES",
           "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_DECODE_BYTES", "BYTES_PER_PIXEL", "CAM_SIDE"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# What one request may cost in memory while its image is decoded (predictions run one at a time
# on the inference thread, so this is also the service's decoding peak), and the most pixels
# any image may have whatever it costs. With the costs below: 16-bit PNGs up to 19 MP, other
# PNG/BMP/TIFF/WebP up to 67 MP, JPEGs up to 100 MP (a 48 MP phone photo passes).
DEFAULT_MAX_DECODE_BYTES = 1 << 30
DEFAULT_MAX_PIXELS = DECODE_MAX_PIXELS  # what gluonft lets OpenCV decode (gluonft.compat)
# Peak memory per pixel while a request's image is decoded and prepared, rounded up from
# `python -m bench.upload_memory` (4-36 MP, OpenCV 4.x): JPEG 0.2 (decoded reduced: the model
# needs a few hundred pixels a side), 8-bit RGB PNG 7.2, 16-bit RGBA PNG 54 (8 bytes a pixel
# decoded, then converted to float copies).
BYTES_PER_PIXEL = {"jpeg": 1, "16-bit": 56, "other": 16}
# The longest side of the Grad-CAM overlay /predict?cam=1 returns: enough to see where the model
# looked, small enough for a JSON answer (a 12 MP photo would be tens of MB as a PNG).
CAM_SIDE = 512


def cam_overlay(clf, data: bytes, index: int) -> str:
    """The uploaded photo with the Grad-CAM overlay of class ``index`` (of ``clf``, or of an
    ensemble's first member), shrunk to `CAM_SIDE`, as a PNG ``data:`` URI."""
    member = members_of(clf)[0]
    suffix = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"  # as predict_bytes decodes it
    with tempfile.TemporaryDirectory(prefix="gluonft-cam-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        cam = grad_cam(member, [path], target=index)
    picture = overlay(cam.photos[0], cam.heatmaps[0])
    scale = CAM_SIDE / max(picture.shape[:2])
    if scale < 1:
        picture = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)),
                                       max(1, round(picture.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the overlay could not be encoded as PNG")
    return data_uri("image/png", encoded.tobytes())


class _Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _png_bit_depth(data: bytes) -> int:
    # IHDR is the first chunk: width, height, then the bit depth byte
    return data[24] if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 else 8


def image_header(data: bytes) -> dict:
    """{"width", "height", "format", "cost"}: the image's size and format from its header
    alone, and the kind of decoding cost (a key of `BYTES_PER_PIXEL`).

    Raises:
        _Rejected: 415 when the header is not one of an image this service decodes; 413 when
            Pillow itself calls it a decompression bomb (more than ~179 million pixels).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
                kind, mode = image.format or "", image.mode
    except Image.DecompressionBombError as bomb:
        raise _Rejected(413, f"the image is too large to decode ({bomb})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as bad:
        raise _Rejected(415, f"the upload is not an image this server can decode (expected "
                             f"JPEG, PNG, BMP, TIFF or WebP): {bad}") from None
    if kind == "JPEG":
        cost = "jpeg"
    elif _png_bit_depth(data) == 16 or mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        cost = "16-bit"
    else:
        cost = "other"
    return {"width": width, "height": height, "format": kind, "cost": cost}


def _read_upload(request, *, max_bytes: int, max_pixels: int, max_decode_bytes: int) -> bytes:
    """The uploaded image's bytes, or `_Rejected` with the status and the reason: no image,
    empty, too many bytes, too many pixels, or more decoding memory than allowed (read from
    the image header before anything is decoded)."""
    too_large = f"the upload is larger than the limit of {max_bytes:,} bytes"
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            fields = sorted(request.files) + sorted(request.form)
            raise _Rejected(400, "expected the image in the multipart file field 'image'"
                            + (f", got the field(s) {', '.join(fields)}" if fields else ""))
        data = upload.read(max_bytes + 1)
    else:
        # Read one byte past the limit: a chunked upload has no Content-Length to refuse
        # it by, and a truncated image must not reach the decoder (it answered 415).
        data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _Rejected(413, too_large)
    if not data:
        raise _Rejected(400, "the upload is empty: send an image (JPEG, PNG ...) as the "
                             "multipart field 'image' or as the request body")
    header = image_header(data)
    pixels = header["width"] * header["height"]
    cost = pixels * BYTES_PER_PIXEL[header["cost"]]
    if pixels > max_pixels or cost > max_decode_bytes:
        why = (f"more than the limit of {max_pixels:,}" if pixels > max_pixels else
               f"which as a {header['cost']} {header['format']} would take "
               f"{cost / 1e9:.1f} GB to decode, more than the limit of "
               f"{max_decode_bytes / 1e9:.1f} GB")
        raise _Rejected(413, f"the image has {header['width']} x {header['height']} = "
                             f"{pixels:,} pixels, {why}; send a smaller image")
    return data


def create_app(clf, *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, tta: bool = False):
    """A Flask app serving predictions of ``clf``.

    Args:
        clf: a `gluonft.Classifier` (e.g. from `load_classifier`) or an `Ensemble`.
        max_bytes: largest accepted upload; a larger one gets 413.
        max_pixels: largest accepted image (width x height) of any kind; a larger one gets 413.
        max_decode_bytes: the memory one request's decoding may take (pixels x the kind's
            `BYTES_PER_PIXEL`); an image that would take more gets 413.
        tta: average each prediction over the image and its mirror.

    Returns:
        the Flask application (a WSGI callable); ``app.inference`` is its inference thread
        (an executor with one worker), shut down by ``app.inference.shutdown()``.

    Raises:
        ImportError: Flask is not installed (the ``serve`` extra).

    Example:
        >>> app = create_app(load_classifier("models/clothes"))  # doctest: +SKIP
        >>> serve(app, port=8000)  # doctest: +SKIP
        $ curl -F image=@shirt.jpg localhost:8000/predict
        {"class": "shirt", "index": 7, "label": "shirt", "probability": 0.93,
         "probabilities": {...}}
    """
    try:
        from flask import Flask, jsonify, request
        from werkzeug.exceptions import HTTPException
    except ImportError:
        raise ImportError("the prediction service needs Flask: pip install -e '.[serve]' in "
                          "gluonft's source folder") from None
    members = members_of(clf)
    for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels),
                        ("max_decode_bytes", max_decode_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    first = members[0]
    health = {"status": "ok",
              "model": "+".join(m.backbone for m in members),
              "classes": list(first.classes),
              "image_size": [m.image_size for m in members] if len(members) > 1
              else first.image_size,
              "params": sum(m.params for m in members)}
    opencv_limit = int(os.environ.get(OPENCV_LIMIT_VARIABLE, 1 << 30))
    if max_pixels > opencv_limit:
        raise ValueError(f"max_pixels {max_pixels:,} is above what OpenCV decodes in this "
                         f"process ({OPENCV_LIMIT_VARIABLE}={opencv_limit}): set that variable "
                         f"to at least {max_pixels} before Python starts")
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gluonft-inference")
    app = Flask("gluonft.serve")
    app.inference = inference
    # Multipart bodies are parsed by werkzeug, which enforces this limit (a little above
    # max_bytes: the form's boundaries and headers count too).
    app.config["MAX_CONTENT_LENGTH"] = max_bytes + 64 * 1024
    too_large = f"the upload is larger than the limit of {max_bytes:,} bytes"

    def error(status: int, message: str):
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        return response

    page = render("service.html", title=f"gluonft: {health['model']}", health=health,
                  max_bytes=max_bytes, version=__version__)

    @app.get("/")
    def _page():
        return page, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.get("/health")
    def _health():
        return jsonify(health)

    def predict_with_cam(data: bytes) -> dict:
        row = predict_bytes(clf, data, tta=tta)
        row["cam"] = cam_overlay(clf, data, row["index"])
        return row

    @app.post("/predict")
    def _predict():
        try:
            data = _read_upload(request, max_bytes=max_bytes, max_pixels=max_pixels,
                                max_decode_bytes=max_decode_bytes)
            if request.args.get("cam", "0") not in ("0", "1"):
                raise _Rejected(400, f"cam must be 0 or 1, got {request.args['cam']!r}")
            if request.args.get("cam") == "1":
                row = inference.submit(predict_with_cam, data).result()
            else:
                row = inference.submit(predict_bytes, clf, data, tta=tta).result()
        except _Rejected as bad:
            return error(bad.status, str(bad))
        except ValueError as bad:
            return error(415, f"{bad}")
        row.pop("file", None)
        return jsonify(row)

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if exc.code == 413:
            return error(413, too_large)
        return error(exc.code or 500, exc.description or exc.name)

    return app


def serve(app, *, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          ready=None) -> None:
    """Serve ``app`` with waitress until interrupted (Ctrl-C).

    Args:
        app: from `create_app`.
        host, port: where to listen (port 0: any free port).
        threads: request threads (predictions still run one at a time on the app's inference
            thread; more request threads only let uploads arrive in parallel).
        ready: called with the bound port once listening.

    Raises:
        OSError: the address cannot be bound (busy port, no permission).
    """
    try:
        from waitress import create_server
    except ImportError:
        raise ImportError("serving needs waitress: pip install -e '.[serve]' in gluonft's "
                          "source folder") from None
    server = create_server(app, host=host, port=port, threads=threads, ident="gluonft")
    try:
        if ready is not None:
            ready(server.effective_port)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.inference.shutdown(wait=True)
