"""The prediction service, through real HTTP requests on 127.0.0.1."""
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
import uuid

import cv2
import numpy as np
import pytest

from gluonft.predict import predict_files

from . import clothing

pytest.importorskip("flask", reason="the serve extra is not installed: pip install "
                                    "-e '.[serve]'")

from gluonft.serve import create_app  # noqa: E402

MAX_BYTES = 200_000  # the clothing photos are 10-40 KB


@pytest.fixture(scope="module")
def clf(shared):
    return clothing.classifier(shared)


def _serving(app):
    """``app`` on a free port in a background thread: yields its URL, then shuts it down."""
    from werkzeug.serving import make_server
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(clf):
    """The app with a small upload limit; shut down after the module's tests."""
    yield from _serving(create_app(clf, max_bytes=MAX_BYTES))


def request(url, *, data=None, headers=None, method=None):
    """(status, JSON body) of one request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(field, filename, content):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def photo(shared):
    return sorted((clothing.paths(shared)[0] / "test" / "shoes").iterdir())[0]


def test_health(server, clf):
    status, body = request(f"{server}/health")
    assert status == 200
    assert body == {"status": "ok", "model": "mobilenet0.75", "classes": list(clf.classes),
                    "image_size": 64, "params": clf.params}


def test_predict_a_real_photo_as_upload_and_as_raw_body(server, clf, photo):
    expected = predict_files(clf, [photo])[0]
    body, headers = multipart("image", photo.name, photo.read_bytes())
    status, answer = request(f"{server}/predict", data=body, headers=headers)
    assert status == 200, answer
    assert set(answer) == {"class", "index", "label", "probability", "probabilities"}
    assert answer["class"] == expected["class"] == clf.classes[answer["index"]]
    assert answer["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert list(answer["probabilities"]) == list(clf.classes)
    # The same photo re-encoded as PNG, sent as the raw body.
    image = cv2.imdecode(np.fromfile(str(photo), np.uint8), cv2.IMREAD_COLOR)
    png = cv2.imencode(".png", image)[1].tobytes()
    status, raw = request(f"{server}/predict", data=png,
                          headers={"Content-Type": "image/png"})
    assert status == 200 and raw["class"] == answer["class"]
    assert raw["probability"] == pytest.approx(answer["probability"], abs=0.02)


@pytest.mark.parametrize("case, status, match", [
    ("empty", 400, "the upload is empty"),
    ("empty_field", 400, "the upload is empty"),
    ("text", 415, "not an image"),
    ("truncated_jpeg", 415, "not an image"),
    ("wrong_field", 400, "field 'image', got the field\\(s\\) photo"),
    ("too_large", 413, "larger than the limit of 200,000 bytes"),
    ("get_predict", 405, "not allowed"),
    ("unknown_path", 404, "not found"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_lives_on(server, photo, case, status,
                                                              match):
    url, data, headers, method = f"{server}/predict", None, {}, None
    if case == "empty":
        data = b""
        method = "POST"
    elif case == "empty_field":
        data, headers = multipart("image", "x.jpg", b"")
    elif case == "text":
        data = b"hello, I am not an image"
    elif case == "truncated_jpeg":
        data = photo.read_bytes()[:200]
    elif case == "wrong_field":
        data, headers = multipart("photo", photo.name, photo.read_bytes())
    elif case == "too_large":
        data = b"\xff\xd8\xff" + bytes(MAX_BYTES)
    elif case == "unknown_path":
        url = f"{server}/classify"
    got, body = request(url, data=data, headers=headers, method=method)
    assert got == status, body
    assert body["status"] == status
    assert pytest.importorskip("re").search(match, body["error"], re_flags()), body
    assert request(f"{server}/health")[0] == 200


def re_flags():
    import re
    return re.IGNORECASE


def _chunked_post(url, chunks):
    """(status, JSON body) of a POST whose body has no Content-Length (chunked encoding)."""
    import http.client
    from urllib.parse import urlsplit
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        connection.request("POST", where.path, body=iter(chunks),
                           headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_serve_command_answers_http(shared, clf, tmp_path, photo):
    """`python -m gluonft serve` (waitress) in a child process on a free port."""
    import subprocess
    import sys
    from pathlib import Path

    from gluonft.model_io import save_classifier
    save_classifier(clf.net, tmp_path / "model", classes=clf.classes, image_size=64,
                    extra={"stored_size": 74, "fit": "crop"})
    root = Path(__file__).resolve().parents[1]
    small = len(photo.read_bytes()) + 10  # the photo fits, twice the photo does not
    command = [sys.executable, "-m", "gluonft", "serve", str(tmp_path / "model"),
               "--max-bytes", str(small), "--max-pixels", "60000"]
    child = subprocess.Popen(command + ["--port", "0"], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # printed once the socket listens
        assert "serving mobilenet0.75 (10 classes) on http://127.0.0.1:" in line, (
            line, child.stderr.read() if child.poll() is not None else "")
        url = line.split(" on ")[1].split()[0]
        status, body = request(f"{url}/health")
        assert status == 200 and body["classes"] == list(clf.classes)
        data = photo.read_bytes()
        status, body = _chunked_post(f"{url}/predict", [data[:100], data[100:]])
        assert status == 200 and body["class"] in clf.classes, body
        status, body = _chunked_post(f"{url}/predict", [data, data])
        assert status == 413 and f"larger than the limit of {small:,} bytes" in body["error"]
        # A 300 x 300 PNG of few bytes is over 60,000 pixels: refused before decoding.
        big = cv2.imencode(".png", np.zeros((300, 300, 3), np.uint8))[1].tobytes()
        assert len(big) < small
        status, body = request(f"{url}/predict", data=big, headers={"Content-Type": "image/png"})
        assert status == 413 and "300 x 300 = 90,000 pixels, more than the limit of 60,000" \
            in body["error"]
        assert request(f"{url}/health")[0] == 200

        # A busy port: one line and exit 2, not the server's traceback.
        busy = int(url.rsplit(":", 1)[1])
        taken = subprocess.run(command + ["--port", str(busy)], cwd=root, capture_output=True,
                               text=True, timeout=120)
        assert taken.returncode == 2 and taken.stderr.count("\n") == 1, taken.stderr
        assert taken.stderr.startswith(f"gluonft: error: cannot listen on 127.0.0.1:{busy}: ")
    finally:
        child.terminate()
        child.wait(timeout=30)


def png_of_zeros(width: int, height: int, *, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A valid PNG of a black image, written row by row: a huge image in a small upload (the
    decompression bomb of the audit: 15000 x 15000 in ~220 KB)."""
    import struct
    import zlib
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = bytes(1 + width * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def default_server(clf):
    """The app with its default limits."""
    yield from _serving(create_app(clf))


def test_a_decompression_bomb_is_refused_before_it_is_decoded(default_server):
    bomb = png_of_zeros(15000, 15000)  # 225 MP: past Pillow's own bomb threshold
    assert len(bomb) < 300_000
    status, body = request(f"{default_server}/predict", data=bomb)
    assert status == 413 and "too large to decode" in body["error"], body


def test_the_decoding_memory_budget_refuses_a_16_bit_png_and_admits_a_larger_jpeg(
        default_server):
    from gluonft.serve import BYTES_PER_PIXEL, DEFAULT_MAX_DECODE_BYTES
    rgba16 = png_of_zeros(5000, 5000, bit_depth=16, color_type=6)  # 25 MP, 8 bytes a pixel
    assert 25e6 * BYTES_PER_PIXEL["16-bit"] > DEFAULT_MAX_DECODE_BYTES
    status, body = request(f"{default_server}/predict", data=rgba16)
    assert status == 413 and "16-bit PNG would take 1.4 GB to decode" in body["error"], body
    # a 48 MP phone photo's size as a JPEG: decoded reduced, it costs almost nothing
    jpeg = cv2.imencode(".jpg", np.full((6000, 8000, 3), 128, np.uint8))[1].tobytes()
    status, body = request(f"{default_server}/predict", data=jpeg)
    assert status == 200 and body["probability"] > 0, body
    assert request(f"{default_server}/health")[0] == 200


def test_opencv_decodes_no_more_than_the_services_limit(tmp_path):
    """gluonft sets OpenCV's own limit (read once, when OpenCV loads) to 100 MP: an image past
    it fails in the decoder too, whatever path it takes."""
    import subprocess
    import sys

    from gluonft.compat import DECODE_MAX_PIXELS
    (tmp_path / "over.png").write_bytes(png_of_zeros(10_001, 10_000))  # 100,010,000 pixels
    (tmp_path / "under.png").write_bytes(png_of_zeros(100, 100))
    code = ("import os, sys, gluonft, cv2, numpy as np\n"
            "def decodes(name):\n"
            "    data = np.fromfile(os.path.join(sys.argv[1], name), np.uint8)\n"
            "    try:\n"
            "        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None\n"
            "    except cv2.error:\n"
            "        return False\n"
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], decodes('under.png'),"
            " decodes('over.png'))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == [str(DECODE_MAX_PIXELS), "True", "False"]


def test_a_pixel_limit_above_what_opencv_decodes_is_refused(clf):
    with pytest.raises(ValueError, match=r"OPENCV_IO_MAX_IMAGE_PIXELS=100000000"):
        create_app(clf, max_pixels=200_000_000)


# --- the service's own page and the Grad-CAM overlay -------------------------------------------

def _png_of(uri):
    import base64
    assert uri.startswith("data:image/png;base64,")
    return cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8),
                        cv2.IMREAD_COLOR)


def test_predict_with_cam_returns_the_overlay_of_the_predicted_class(server, clf, photo):
    from gluonft.gradcam import grad_cam, overlay

    body, headers = multipart("image", photo.name, photo.read_bytes())
    status, plain = request(f"{server}/predict", data=body, headers=headers)
    status, answer = request(f"{server}/predict?cam=1", data=body, headers=headers)
    assert status == 200, answer
    assert {k: v for k, v in answer.items() if k != "cam"} == plain  # the same prediction
    shown = _png_of(answer["cam"])
    cam = grad_cam(clf, [photo], target=answer["index"])
    expected = overlay(cam.photos[0], cam.heatmaps[0])
    scale = min(1.0, 512 / max(expected.shape[:2]))
    assert shown.shape[:2] == (round(expected.shape[0] * scale), round(expected.shape[1] * scale))
    if scale == 1.0:  # the same overlay, PNG is lossless
        assert np.array_equal(shown[:, :, ::-1], expected)
    status, bad = request(f"{server}/predict?cam=yes", data=body, headers=headers)
    assert status == 400 and "cam must be 0 or 1, got 'yes'" in bad["error"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_in_a_real_browser_shows_what_predict_answers(server, clf, photo, tmp_path):
    """Upload a real photo through the page in headless Chromium (driven by Playwright); the
    class shown must be /predict's answer, the top 5 in order, the overlay and the photo shown;
    nothing is fetched from elsewhere."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(the test extra has it)")
    if _chromium() is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (.ci/run does)")
    body, headers = multipart("image", photo.name, photo.read_bytes())
    _, expected = request(f"{server}/predict", data=body, headers=headers)
    outside = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith((server, "blob:", "data:")) else None)
            page.goto(f"{server}/")
            assert page.title() == "gluonft: mobilenet0.75"
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#result", state="visible", timeout=60_000)
            page.wait_for_function("document.getElementById('cam').complete && "
                                   "document.getElementById('cam').naturalWidth > 0")
            shown = page.text_content("#answer")
            rows = page.eval_on_selector_all("#top tbody tr", "rows => rows.map(r => "
                                             "r.cells[0].textContent)")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert page.text_content("#error") == ""
        finally:
            browser.close()
    assert shown.startswith(expected["class"] + " (")
    assert f"{100 * expected['probability']:.1f} %" in shown
    ranked = sorted(expected["probabilities"], key=expected["probabilities"].get, reverse=True)
    assert rows == ranked[:5]
    assert not outside, f"the page fetched from elsewhere: {outside}"
    assert (tmp_path / "page.png").stat().st_size > 10_000
    # a copy to look at (CI keeps nothing; a developer sets GLUONFT_SCREENSHOTS)
    keep = os.environ.get("GLUONFT_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(tmp_path / "page.png", os.path.join(keep, "service-page.png"))
