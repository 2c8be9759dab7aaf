"""`python -m bench.upload_memory`: the service's peak memory per request, by image kind and
size, from which `gluonft.serve.DEFAULT_MAX_PIXELS` is chosen.

For each kind (8-bit RGB JPEG, 8-bit RGB PNG, 16-bit RGBA PNG: the most expensive one the
decoder accepts) and size, a fresh Python loads a small model, predicts one small upload (so
that MXNet's and OpenCV's own start-up memory is counted before), then the measured one through
`gluonft.predict.predict_bytes` (the service's path), and reports the growth of its peak
resident memory (VmHWM) divided by the image's pixels. Prints a table and writes
``upload_memory.json``:

    python -m bench.upload_memory                      # 4, 16 and 36 MP; about 2 minutes
    python -m bench.upload_memory --megapixels 4,64
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gluonft
from gluonft.fileio import atomic_write_json, library_versions
from gluonft.serve import DEFAULT_MAX_PIXELS

KINDS = ("jpeg-rgb8", "png-rgb8", "png-rgba16")

CHILD = r"""
import json, sys
import gluonft
from gluonft.predict import predict_bytes

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

small, upload, model, pixels = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
clf = gluonft.load_classifier(model)
predict_bytes(clf, open(small, "rb").read())  # MXNet's and OpenCV's start-up memory first
data = open(upload, "rb").read()
before = peak_kib()
predict_bytes(clf, data)
growth = (peak_kib() - before) * 1024
print(json.dumps({"upload_bytes": len(data), "peak_growth_bytes": growth,
                  "bytes_per_pixel": growth / pixels}))
"""


def encoded(kind: str, side: int) -> bytes:
    """A photo-like image (a smooth gradient and a little noise: it compresses like a photo,
    unlike pure noise) of ``kind``, encoded."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    base = (ramp[:, None] * ramp[None, :])[..., None]
    if kind == "png-rgba16":
        image = (base * 60000 + rng.integers(0, 500, (side, side, 4))).astype(np.uint16)
        return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    image = (base * 250 + rng.integers(0, 5, (side, side, 3))).astype(np.uint8)
    return cv2.imencode(".jpg" if kind == "jpeg-rgb8" else ".png", image)[1].tobytes()


def _model(folder: Path) -> Path:
    net = gluonft.load_backbone("mobilenet0.25", classes=3, weights=None, seed=0)
    return gluonft.save_classifier(net, folder / "model", classes=["a", "b", "c"],
                                   image_size=64, extra={"stored_size": 74, "fit": "crop"})


def measure(kind: str, megapixels: float, model: Path, folder: Path) -> dict:
    side = int(round((megapixels * 1e6) ** 0.5))
    small, upload = folder / f"small-{kind}", folder / f"upload-{kind}"
    small.write_bytes(encoded(kind, 64))
    upload.write_bytes(encoded(kind, side))
    out = subprocess.run([sys.executable, "-c", CHILD, str(small), str(upload), str(model),
                          str(side * side)], capture_output=True, text=True, timeout=600)
    upload.unlink()
    if out.returncode != 0:
        raise RuntimeError(f"{kind} at {megapixels} MP failed: {out.stderr.strip()[-500:]}")
    return {"kind": kind, "megapixels": side * side / 1e6,
            **json.loads(out.stdout.strip().splitlines()[-1])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.upload_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megapixels", default="4,16,36", help="sizes, comma-separated")
    p.add_argument("--out", default="runs/upload-memory", help="folder for upload_memory.json")
    a = p.parse_args(argv)
    sizes = [float(x) for x in a.megapixels.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp))
        print(f"{'kind':<12} {'MP':>6} {'upload MB':>10} {'peak growth MB':>15} {'B/pixel':>8}")
        for kind in KINDS:
            for mp in sizes:
                row = measure(kind, mp, model, Path(tmp))
                rows.append(row)
                print(f"{kind:<12} {row['megapixels']:>6.1f} {row['upload_bytes'] / 1e6:>10.1f} "
                      f"{row['peak_growth_bytes'] / 1e6:>15.0f} {row['bytes_per_pixel']:>8.1f}")
    worst = max(row["bytes_per_pixel"] for row in rows)
    record = {"rows": rows, "worst_bytes_per_pixel": worst,
              "default_max_pixels": DEFAULT_MAX_PIXELS,
              "default_peak_bytes": worst * DEFAULT_MAX_PIXELS,
              "versions": library_versions()}
    print(f"worst: {worst:.1f} bytes per pixel; at the default limit of "
          f"{record['default_max_pixels']:,} pixels: {record['default_peak_bytes'] / 1e9:.2f} GB")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(a.out) / "upload_memory.json", record)
    return record


if __name__ == "__main__":
    main()
