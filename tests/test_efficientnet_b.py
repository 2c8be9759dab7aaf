"""EfficientNet-B0..B3: logits equal to efficientnet-pytorch's on real photos (same random
weights, tools/efficientnet_b_reference.py), the reference's parameter counts, drop-connect in
training only, and the ImageNet checkpoint fetched from a real HTTP server on 127.0.0.1:
accepted by its hash, refused with nothing left when the hash differs, resumed after an
interrupted download."""
import collections
import hashlib
import http.server
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import types
import zipfile
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft import efficientnet_b
from gluonft.datasets import load_images
from gluonft.efficientnet import MBConv
from gluonft.efficientnet_b import B_VARIANTS, convert_b_state_dict
from gluonft.efficientnet_b import efficientnet_b as build
from gluonft.inference import inference_forward
from gluonft.weights import WeightsMismatch, WeightsUnavailable

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "efficientnet_b_reference.npz"
CPU = mx.cpu()
# Logits within 1e-4 of their scale (the largest |logit|): both sides sum the same float32
# products in other orders (oneDNN against PyTorch's kernels, ~1e-6 relative); the fused
# oneDNN twin folds BatchNorm into the weights first (another rounding each layer).
RELATIVE = 1e-4


def _tool():
    spec = importlib.util.spec_from_file_location(
        "efficientnet_b_reference", ROOT / "tools" / "efficientnet_b_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(shared):
    if not (shared / "data" / "dogcat").exists():
        pytest.skip("../shared/data/dogcat not found")
    data = np.load(FIXTURE)
    return data, json.loads(str(data["meta"]))


def _shapes(name):
    net = build(name)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    own = [p.shape for p in net._collect_params_with_prefix().values()]
    return dict(zip(efficientnet_b._torch_names(name), own))


def _random_state(name, order):
    shapes = _shapes(name)
    return _tool().random_state([(k, shapes[k]) for k in order])


def _net(name, params, *, hybridize):
    net = build(name)
    net.initialize(ctx=CPU)
    net(mx.nd.zeros((1, 3, 64, 64)))
    for key, p in net._collect_params_with_prefix().items():
        p.set_data(params[key])
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def _inputs(shared, meta, name):
    files = [shared / "data" / "dogcat" / p for p in meta["photos"]]
    images, _, _ = load_images(files, size=B_VARIANTS[name][2], fit="crop", workers=1)
    assert hashlib.sha1(images.tobytes()).hexdigest() == meta[f"{name}_input_sha1"]
    x = (images / 255.0 - np.array(efficientnet_b.B_MEAN)) / np.array(efficientnet_b.B_STD)
    return mx.nd.array(x.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize("name", sorted(B_VARIANTS))
def test_logits_equal_the_reference_on_real_photos(name, reference, shared, tmp_path):
    data, meta = reference
    params = convert_b_state_dict(name, _random_state(name, meta[f"{name}_order"]))
    x, expected = _inputs(shared, meta, name), data[name]
    scale = float(np.abs(expected).max())
    outputs = {}
    for hybridize in (False, True):
        net = _net(name, params, hybridize=hybridize)
        outputs[f"hybridize={hybridize}"] = net(x).asnumpy()
    fused = inference_forward(net, [CPU], hybridize=True, images=256)  # the fused oneDNN twin
    outputs["fused"] = fused(x).asnumpy()
    net.export(str(tmp_path / "b"), epoch=0)
    exported = mx.gluon.SymbolBlock.imports(str(tmp_path / "b-symbol.json"), ["data"],
                                            str(tmp_path / "b-0000.params"), ctx=CPU)
    outputs["exported"] = exported(x).asnumpy()
    for how, logits in outputs.items():
        worst = float(np.abs(logits - expected).max())
        print(f"{name} {how}: max |difference| {worst:.2e} of a scale {scale:.3f}")
        assert worst <= RELATIVE * scale, how


def test_parameter_counts_are_the_references(reference):
    _, meta = reference
    for name in B_VARIANTS:
        net = build(name)
        net.initialize()
        net(mx.nd.zeros((1, 3, 64, 64)))
        assert gluonft.backbones.count_params(net) == meta[f"{name}_params"]
    assert meta["efficientnet_b0_params"] == 5_288_548


def test_drop_connect_drops_whole_branches_in_training_only():
    net = build("efficientnet_b0")
    net.initialize(mx.init.Xavier())
    # the last block with a residual sum, the 15th of 16: drop-connect 0.2 * 14 / 16
    block = [b for b in net.features if isinstance(b, MBConv) and b.residual][-1]
    assert block.drop_connect == pytest.approx(0.175)
    x = mx.nd.random.normal(shape=(400, 192, 7, 7))
    branch = block.body(x)
    assert np.allclose(block(x).asnumpy(), (x + branch).asnumpy())  # inference: kept, unscaled
    mx.random.seed(0)
    with mx.autograd.record(train_mode=True):  # BatchNorm on batch statistics: both alike
        branch = block.body(x)
        out = block(x).asnumpy()
    kept = np.abs(out - x.asnumpy()).reshape(400, -1).max(axis=1) > 0
    dropped = int((~kept).sum())
    assert 35 < dropped < 105  # Binomial(400, 0.175): 70 +- 8
    np.testing.assert_allclose((out - x.asnumpy())[kept], branch.asnumpy()[kept] / (1 - 0.175),
                               rtol=1e-5, atol=1e-5)


def test_every_regime_and_the_blocks_of_last_k():
    net = gluonft.load_backbone("efficientnet_b0", classes=10, weights=None, ctx=CPU)
    blocks = gluonft.feature_blocks(net)
    assert len(blocks) == 18  # stem, 16 MBConv blocks, the head conv
    plan = gluonft.apply_regime(net, "last_k:2")
    assert plan.trainable_params > 0 and "2 of 18 backbone blocks" in plan.describe()


# --- the released checkpoint, fetched from a real server ---------------------------------------

def _torch_zip(path, state):
    """``state`` written as torch.save's zip format, with pickle alone (torch stand-ins are put
    in sys.modules while pickling, so that the pickle names torch's own classes)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", \
        "_rebuild_tensor_v2"
    storage_class = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = storage_class, utils, \
        _rebuild_tensor_v2

    class Ref:
        def __init__(self, key, n):
            self.key, self.n = key, n

    class Tensor:
        def __init__(self, key, array):
            self.key, self.array = key, array

        def __reduce__(self):
            shape = self.array.shape
            strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
            return _rebuild_tensor_v2, (Ref(self.key, self.array.size), 0, shape, strides,
                                        False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_class, obj.key, "cpu", obj.n) if isinstance(obj, Ref) \
                else None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(collections.OrderedDict(
            (name, Tensor(str(i), array)) for i, (name, array) in enumerate(state.items())))
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for i, array in enumerate(state.values()):
            archive.writestr(f"archive/data/{i}", np.ascontiguousarray(array).tobytes())


class _Server:
    """Files on 127.0.0.1 with HTTP Range support; ``cut`` sends only half of the next body."""

    def __init__(self, files):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    server.ranges.append(start)
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cut:
                    server.cut = False
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body[start:])

        self.ranges, self.cut = [], False
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def released(tmp_path, monkeypatch):
    """A random B0 checkpoint in torch's zip format, served on 127.0.0.1 under a name that
    carries its real sha256 prefix, and an empty store."""
    shapes = _shapes("efficientnet_b0")
    state = _tool().random_state(list(shapes.items()), seed=7)
    checkpoint = tmp_path / "b0.pth"
    _torch_zip(checkpoint, state)
    body = checkpoint.read_bytes()
    name = f"efficientnet-b0-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    server = _Server({name: body})
    monkeypatch.setitem(efficientnet_b.B_CHECKPOINTS, "efficientnet_b0", name)
    monkeypatch.setenv(efficientnet_b.REPO_VARIABLE, server.url)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    yield types.SimpleNamespace(server=server, state=state, name=name,
                                store=tmp_path / "home" / "models")
    server.close()


def test_the_checkpoint_is_downloaded_verified_and_converted_once(released):
    net = gluonft.load_backbone("efficientnet_b0", classes=10, weights="imagenet", ctx=CPU)
    expected = convert_b_state_dict("efficientnet_b0", released.state)
    stem = net.features[1].weight.data().asnumpy()
    assert np.array_equal(stem, expected["features.1.weight"].asnumpy())
    assert sorted(os.listdir(released.store)) == sorted(
        [released.name, f"efficientnet_b0-{released.name.split('-')[2][:8]}.params"])
    released.server.close()  # a second load reads the converted file: no network needed
    gluonft.load_backbone("efficientnet_b0", classes=10, weights="imagenet", ctx=CPU)


def test_a_hash_mismatch_is_refused_and_nothing_is_left(released, monkeypatch):
    wrong = "efficientnet-b0-00000000.pth"  # the same bytes under a name they do not match
    monkeypatch.setitem(efficientnet_b.B_CHECKPOINTS, "efficientnet_b0", wrong)
    server = _Server({wrong: (released.store.parent.parent / "b0.pth").read_bytes()})
    monkeypatch.setenv(efficientnet_b.REPO_VARIABLE, server.url)
    try:
        with pytest.raises(WeightsMismatch, match="not the expected 00000000"):
            gluonft.load_backbone("efficientnet_b0", classes=10, weights="imagenet", ctx=CPU)
    finally:
        server.close()
    assert not released.store.exists() or os.listdir(released.store) == []


def test_an_interrupted_download_resumes_where_it_stopped(released):
    released.server.cut = True
    with pytest.raises(WeightsUnavailable, match="run again to resume"):
        gluonft.load_backbone("efficientnet_b0", classes=10, weights="imagenet", ctx=CPU)
    part = released.store / (released.name + ".part")
    assert part.is_file() and 0 < part.stat().st_size
    half = part.stat().st_size
    gluonft.load_backbone("efficientnet_b0", classes=10, weights="imagenet", ctx=CPU)
    assert released.server.ranges == [half]  # the second request continued the part
    assert not part.exists() and (released.store / released.name).is_file()


def test_offline_the_grid_records_imagenet_as_failed_and_still_trains_scratch(shared,
                                                                              tmp_path):
    data = shared / "data" / "cifar-10-subset"
    if not data.exists():
        pytest.skip("../shared/data/cifar-10-subset not found")
    env = dict(os.environ, MXNET_HOME=str(tmp_path / "home"),
               **{efficientnet_b.REPO_VARIABLE: "http://127.0.0.1:9/"})
    done = subprocess.run(
        [sys.executable, "-m", "bench.cifar", "--preset", "smoke", "--data-root", str(data),
         "--models", "efficientnet_b0", "--regimes", "head,scratch", "--no-baseline",
         "--out", str(tmp_path / "run"), "--no-progress"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stderr[-2000:]
    records = {r["id"]: r for r in json.loads((tmp_path / "run" / "results.json").read_text())
               ["records"]}
    head, scratch = records["efficientnet_b0-head-s0"], records["efficientnet_b0-scratch-s0"]
    assert head["status"] == "failed" and "efficientnet-b0-355c32eb.pth" in head["error"]
    assert str(tmp_path / "home" / "models") in head["error"]
    assert scratch["status"] == "ok" and scratch["pretrained_on"] == "random"


def test_another_variants_or_a_truncated_checkpoint_is_one_clear_line(tmp_path):
    """weights=PATH given a B1 checkpoint for B0, or a checkpoint cut short: the CLI's one line
    names the file and what was expected (not a traceback from the reader or MXNet)."""
    b1 = tmp_path / "efficientnet-b1.pth"
    _torch_zip(b1, _tool().random_state(list(_shapes("efficientnet_b1").items()), seed=3))
    with pytest.raises(WeightsMismatch, match=rf"{b1}: a checkpoint of efficientnet_b1, not "
                                              r"efficientnet_b0: load it with efficientnet_b1, "
                                              r"or use efficientnet_b0's \(efficientnet-b0-"):
        gluonft.load_backbone("efficientnet_b0", classes=10, weights=str(b1), ctx=CPU)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(b1.read_bytes()[: b1.stat().st_size // 2])
    with pytest.raises(WeightsMismatch, match=rf"^{cut} is not a readable torch state dict: "
                                              r"cut short or damaged\? \(BadZipFile"):
        gluonft.load_backbone("efficientnet_b0", classes=10, weights=str(cut), ctx=CPU)
    photos = tmp_path / "photos"
    for label in ("a", "b"):
        (photos / label).mkdir(parents=True)
    for bad in (b1, cut):
        proc = subprocess.run([sys.executable, "-m", "gluonft", "train", str(photos), "--model",
                               "efficientnet_b0", "--weights", str(bad), "--fast", "--out",
                               str(tmp_path / "model")], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"gluonft: error: {bad}"), lines
