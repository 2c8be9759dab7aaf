"""train_classifier, classify, ensembles, fine_tune and lr_find on the real clothing photos."""
import json
import time

import numpy as np
import pytest

from gluonft.backbones import UnknownBackbone, load_backbone
from gluonft.candidates import CANDIDATES, model_params, pick_backbone
from gluonft.datasets.folder import DatasetNotFound, UnreadableImagesWarning
from gluonft.fine_tuning import fine_tune
from gluonft.lr_finder import lr_find
from gluonft.model_io import MODEL_JSON, count_params, load_classifier
from gluonft.predict import classify, ensemble, predict_files
from gluonft.recipes import train_classifier
from gluonft.regimes import apply_regime
from gluonft.train import evaluate, fit
from gluonft.transforms import Augment

from . import clothing

CPU = clothing.CPU


# --- choosing a backbone under a budget -------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilenet0.25", "mobilenet0.75", "squeezenet1.1",
                                  "mobilenetv2_0.25", "resnet18_v1", "efficientnet_lite0",
                                  "efficientnet_lite1", "efficientnet_lite2", "efficientnet_b0",
                                  "efficientnet_b3"])
def test_the_table_of_parameter_counts_matches_real_nets(name):
    net = load_backbone(name, classes=10, weights=None, ctx=CPU)
    assert model_params(name, classes=10) == count_params(net)


def test_pick_backbone_keeps_to_the_budget():
    assert [c.top1 for c in CANDIDATES] == sorted((c.top1 for c in CANDIDATES), reverse=True)
    assert pick_backbone(model="auto", classes=10) == "efficientnet_b3"
    assert pick_backbone(model="auto", max_params=8_000_000, classes=10) == "efficientnet_b2"
    assert pick_backbone(model="auto", max_params=7_000_000, classes=10) == "efficientnet_b1"
    assert pick_backbone(model="auto", max_params=5_000_000, classes=10) == "efficientnet_lite2"
    assert pick_backbone(model="auto", max_params=4_500_000, classes=10) == "efficientnet_lite1"
    assert pick_backbone(model="auto", max_params=2_000_000, classes=10) == "mobilenet0.75"
    assert pick_backbone(model="mobilenet0.75", max_params=5_000_000, classes=10) \
        == "mobilenet0.75"
    with pytest.raises(ValueError, match=r"mobilenet0\.75 has 1,824,250 parameters with 10 "
                                         r"classes \(linear head\), over max_params=1,000,000; "
                                         r".*mobilenet0\.5"):
        pick_backbone(model="mobilenet0.75", max_params=1_000_000, classes=10)
    # The budget counts the head: the mlp:1024,256 head (1.58 M weights on lite's 1280
    # features) leaves lite2 and lite1 out of 5 M; lite0 has 4,949,002 with it.
    assert pick_backbone(model="auto", max_params=5_000_000, classes=10,
                         head="mlp:1024,256") == "efficientnet_lite0"
    assert model_params("mobilenet0.75", classes=10, head="mlp:1024,256") == 2870266
    with pytest.raises(ValueError, match="no backbone fits max_params=1,000"):
        pick_backbone(model="auto", max_params=1000, classes=10)
    with pytest.raises(ValueError, match="max_params must be a positive int"):
        pick_backbone(model="auto", max_params=-5, classes=10)
    with pytest.raises(UnknownBackbone, match=r"did you mean .*mobilenet0\.75"):
        pick_backbone(model="mobilenet0.8", classes=10)


# --- the proof: pretrained features beat training from scratch --------------------------------

def test_head_only_on_imagenet_weights_beats_random_init_by_a_wide_margin(shared):
    """clothing-small, all 3068 training photos at 64 px, scored on all 372 test photos.
    Head-only on the ImageNet weights (features cached) trains in seconds; the random-init net
    trains every layer for ~10x longer and stays far behind."""
    data = clothing.data(shared)
    train = data.train
    _, weights = clothing.paths(shared)
    begin = time.perf_counter()
    pretrained = load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU)
    apply_regime(pretrained, "head")
    fit(pretrained, train, epochs=10, batch_size=64, lr=0.05, augment=Augment.none(),
        cache_features=True, image_size=64, ctx=CPU, progress=False)
    head = evaluate(pretrained, data.test, ctx=CPU, image_size=64)["accuracy"]
    head_seconds = time.perf_counter() - begin

    begin = time.perf_counter()
    scratch = load_backbone("mobilenet0.75", classes=10, weights=None, ctx=CPU)
    apply_regime(scratch, "scratch", seed=0)
    fit(scratch, train, epochs=2, batch_size=64, lr=0.05, augment=Augment.none(),
        image_size=64, ctx=CPU, progress=False)
    random_init = evaluate(scratch, data.test, ctx=CPU, image_size=64)["accuracy"]
    scratch_seconds = time.perf_counter() - begin
    print(f"\nclothing-small test accuracy: head-only (ImageNet) {head:.3f} in "
          f"{head_seconds:.0f} s; random init (all layers, 2 epochs) {random_init:.3f} in "
          f"{scratch_seconds:.0f} s")
    assert head > 0.6, head
    assert head > random_init + 0.2, (head, random_init)


# --- train_classifier end to end, and bad folders ---------------------------------------------

def test_train_classifier_fast_on_class_folders_with_a_corrupt_jpeg(shared, tmp_path):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=8, split="train")
    (photos / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    _, weights = clothing.paths(shared)
    with pytest.warns(UnreadableImagesWarning, match="broken.jpg"):
        clf = train_classifier(photos, model="mobilenet0.75", weights=str(weights),
                               fast_train=True, image_size=64, epochs=3, ctx=CPU,
                               out=tmp_path / "model")
    # The recipes' head, mlp:1024,256: Dense 768x1024 (no bias) + BN, 1024x256 + BN, 256x10.
    assert clf.meta["head"] == "mlp:1024,256" and clf.meta["dropout"] == 0.5
    assert clf.params == 1816560 + 768 * 1024 + 2048 + 1024 * 256 + 512 + 256 * 10 + 10 \
        == clf.meta["params"]
    assert clf.meta["recipe"] == "head only on cached features"
    assert clf.meta["skipped_files"] == [str(photos / "hat" / "broken.jpg")]
    assert clf.meta["train_images"] == 60 and len(clf.meta["history"]["epochs"]) == 3
    assert (tmp_path / "model" / MODEL_JSON).is_file()
    loaded = load_classifier(tmp_path / "model", ctx=CPU)
    assert loaded.classes == clf.classes and loaded.meta["stored_size"] == 74
    # The saved model is never replaced silently, and the check comes before training.
    begin = time.perf_counter()
    with pytest.raises(FileExistsError, match="already holds a model"):
        train_classifier(photos, model="mobilenet0.75", weights=str(weights), fast_train=True,
                         image_size=64, ctx=CPU, out=tmp_path / "model")
    assert time.perf_counter() - begin < 2


def test_bad_folders_get_clear_errors(shared, tmp_path):
    _, weights = clothing.paths(shared)
    train = lambda folder: train_classifier(folder, model="mobilenet0.75",  # noqa: E731
                                            weights=str(weights),
                                            fast_train=True, ctx=CPU)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFound, match="has no class folders.*it is empty"):
        train(tmp_path / "empty")
    one = clothing.copy_photos(shared, tmp_path / "one", per_class=3, classes=["hat"])
    with pytest.raises(ValueError, match="only one class folder, 'hat'"):
        train(one)
    hollow = clothing.copy_photos(shared, tmp_path / "hollow", per_class=3,
                                  classes=["hat", "dress"])
    (hollow / "shoes").mkdir()
    (hollow / "shoes" / "notes.txt").write_text("no photos yet")
    with pytest.raises(ValueError, match="'shoes' hold no image files"):
        train(hollow)
    with pytest.raises(DatasetNotFound, match="does not exist"):
        train(tmp_path / "nowhere")
    with pytest.raises(UnknownBackbone):
        train_classifier(hollow, model="nonet", ctx=CPU)
    with pytest.raises(ValueError, match="unknown recipe 'fastest': expected one of fast, "
                                         "default, staged"):
        train_classifier(hollow, recipe="fastest")
    with pytest.raises(ValueError, match="fast_train=True is recipe='fast'; give one of them"):
        train_classifier(hollow, recipe="default", fast_train=True)
    with pytest.raises(ValueError, match="stages are for fine-tuning; the 'fast' recipe trains "
                                         "the head only"):
        train_classifier(hollow, recipe="fast", stages=(("head", 1), ("full", 1)))


# --- prediction and ensembles -----------------------------------------------------------------

def test_classify_a_folder_of_real_photos(shared, tmp_path):
    clf = clothing.classifier(shared)
    photos = clothing.copy_photos(shared, tmp_path / "new", per_class=3)
    (photos / "readme.txt").write_text("not a photo")
    result = classify(clf, photos)
    assert len(result) == 30 and all(0 <= i < 10 for i in result.values())
    right = sum(clf.classes[i] == name.split("/")[0] for name, i in result.items())
    assert right >= 12, result  # ~60 % expected; chance is 3 of 30
    rows = predict_files(clf, photos, tta=True)
    assert [r["file"] for r in rows] == sorted(result)
    for row in rows:
        assert row["class"] == clf.classes[row["index"]]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["probability"] == max(row["probabilities"].values())
    one = next(iter((photos / "hat").iterdir()))
    assert list(classify(clf, [one])) == [str(one)]
    (photos / "hat" / "broken.jpg").write_bytes(b"garbage")
    with pytest.warns(UnreadableImagesWarning, match="broken.jpg"):
        assert len(classify(clf, photos)) == 30
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classify(clf, tmp_path / "missing.jpg")


def test_ensemble_averages_probabilities(shared, tmp_path):
    a, b = clothing.classifier(shared, seed=0), clothing.classifier(shared, seed=1)
    photos = clothing.copy_photos(shared, tmp_path / "new", per_class=1)
    both = ensemble([a, b])
    expected = np.mean([[list(r["probabilities"].values()) for r in predict_files(m, photos)]
                        for m in (a, b)], axis=0)
    got = [list(r["probabilities"].values()) for r in predict_files(both, photos)]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert classify(both, photos) == dict(zip(sorted(classify(a, photos)),
                                              expected.argmax(1).tolist()))
    renamed = type(b)(net=b.net, classes=tuple(reversed(b.classes)), image_size=b.image_size,
                      mean=b.mean, std=b.std, meta=b.meta)
    with pytest.raises(ValueError, match="same classes in the same order"):
        ensemble([a, renamed])
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])


# --- fine_tune and lr_find --------------------------------------------------------------------

def _weights(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


def test_fine_tune_unfreezes_gradually_with_a_lower_backbone_lr(shared):
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=12, seed=0)
    _, weights = clothing.paths(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU)
    seen = []
    record = lambda epoch, logs: seen.append(  # noqa: E731
        sorted({p.lr_mult for p in net.features.collect_params().values()
                if p.grad_req != "null"}))
    before = _weights(net)
    # A vanishing backbone multiplier: the unfrozen block must stay put while the head learns.
    history = fine_tune(net, train, data.validation, stages=(("head", 1), ("last_k:1", 2)),
                        backbone_lr_mult=1e-9, lr=0.05, image_size=64, ctx=CPU,
                        callbacks=[record])
    assert history["regime"] == ["head", "last_k:1", "last_k:1"]
    assert history["epoch"] == [1, 2, 3] and history["stage"] == [0, 1, 1]
    assert len(history.settings["stages"]) == 2
    assert history.settings["stages"][0]["cache_features"] is True  # head stage: cached
    assert history.settings["stages"][1]["augment"]["flip"] is True
    assert seen == [[], [1e-9], [1e-9]]
    after = _weights(net)
    last = [k for k in after if k.startswith("features.") and k.endswith("weight")][-1]
    assert np.abs(after[last] - before[last]).max() < 1e-6
    assert np.abs(after["output.weight"] - before["output.weight"]).max() > 1e-3
    first = "features.0.weight"
    np.testing.assert_array_equal(after[first], before[first])
    assert all(p.lr_mult == 1.0 for p in net.collect_params().values())  # restored
    with pytest.raises(ValueError, match=r"each stage must be \(regime, epochs\)"):
        fine_tune(net, train, stages=("head",))
    with pytest.raises(ValueError, match="backbone_lr_mult must be a number > 0"):
        fine_tune(net, train, backbone_lr_mult=0)


def test_fine_tune_stages_on_cached_features_share_one_pass_over_the_photos(shared, tmp_path):
    """Unaugmented, the head stage and the last_k stage both cache their frozen prefix: the
    photos go through the backbone once, to the last_k stage's cut, and the head stage runs
    only the rest; the training is the one each stage computing its own features gives
    (a checkpointed run does that: a rerun may skip stages, so it shares nothing)."""
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=8, seed=0)
    _, weights = clothing.paths(shared)
    kwargs = dict(stages=(("head", 2), ("last_k:2", 2)), lr=0.05, image_size=64, ctx=CPU,
                  augment=Augment.none())

    def run(**extra):
        net = load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU)
        return net, fine_tune(net, train, data.validation, **dict(kwargs, **extra))
    net_shared, sharing = run()
    net_own, own = run(checkpoint=str(tmp_path / "ft"))
    head, last_k = (st["feature_cache"] for st in sharing.settings["stages"])
    pass_ = sharing.settings["shared_features"]
    assert pass_["train"]["shape"][0] == len(train)
    assert pass_["val"]["shape"][0] == len(data.validation)
    assert head["from_prefix"]["steps"] == last_k["from_prefix"]["steps"] == pass_["steps"]
    assert head["train"]["source"] == "deepened" and last_k["train"]["source"] == "computed"
    assert last_k["train"]["key"] == pass_["train"]["key"]  # the very pass, not a second one
    assert "shared_features" not in own.settings
    # float32 rounding of other fused graphs apart (losses of order 1)
    np.testing.assert_allclose(sharing["train_loss"], own["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(sharing["val_loss"], own["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(net_shared.output.weight.data().asnumpy(),
                               net_own.output.weight.data().asnumpy(), rtol=1e-3, atol=1e-5)
    # augmented backbone stages compute their own batches: nothing to share
    _, augmented = run(augment=Augment())
    assert "shared_features" not in augmented.settings


def test_fine_tune_with_a_checkpoint_gives_each_stage_its_own_and_a_rerun_skips_them(
        shared, tmp_path):
    """The audit's crash: every stage got the same checkpoint, and stage 2 met stage 1's
    manifest with other settings after stage 1 had trained."""
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=6, seed=0)
    _, weights = clothing.paths(shared)
    checkpoint = str(tmp_path / "ckpt" / "ft")
    kwargs = dict(stages=(("head", 1), ("last_k:1", 2)), lr=0.05, image_size=48, ctx=CPU,
                  checkpoint=checkpoint)

    def net():
        return load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU)

    def crash_in_stage_two(epoch, logs):
        if len(seen) == 2:  # stage 1's epoch and stage 2's first
            raise KeyboardInterrupt
    seen = []
    first = net()
    with pytest.raises(KeyboardInterrupt):
        fine_tune(first, train, data.validation, callbacks=[
            lambda epoch, logs: seen.append(epoch), crash_in_stage_two], **kwargs)
    resumed_net = net()
    resumed = fine_tune(resumed_net, train, data.validation, **kwargs)
    assert resumed["stage"] == [0, 1, 1]
    full_net = net()
    full = fine_tune(full_net, train, data.validation, **dict(kwargs, checkpoint=None))
    np.testing.assert_allclose(resumed["train_loss"], full["train_loss"], rtol=1e-5)
    # a rerun trains nothing (no epoch ends in it): each stage loads its last epoch
    rerun_seen = []
    rerun_net = net()
    rerun = fine_tune(rerun_net, train, data.validation,
                      callbacks=[lambda epoch, logs: rerun_seen.append(epoch)], **kwargs)
    assert rerun_seen == []
    assert rerun["train_loss"] == resumed["train_loss"]
    np.testing.assert_array_equal(rerun_net.output.weight.data().asnumpy(),
                                  resumed_net.output.weight.data().asnumpy())
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("ft.stage*.json")) == \
        ["ft.stage0.json", "ft.stage1.json"]


def test_lr_find_sweeps_and_restores_the_weights(shared):
    data = clothing.data(shared)
    train = data.train.subset(n_per_class=20, seed=0)
    _, weights = clothing.paths(shared)
    net = load_backbone("mobilenet0.75", classes=10, weights=str(weights), ctx=CPU)
    apply_regime(net, "last_k", k=1)
    before = _weights(net)
    found = lr_find(net, train, start=1e-4, end=10, steps=30, batch_size=32, image_size=64,
                    ctx=CPU)
    after = _weights(net)
    assert before.keys() == after.keys()
    for key in before:  # every parameter and running statistic, bit for bit
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    lrs = found["lrs"]
    assert 5 <= len(lrs) <= 30 and lrs[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(np.diff(np.log(lrs)), np.log(10 / 1e-4) / 29, rtol=1e-6)
    assert len(found["losses"]) == len(lrs) == len(found["raw_losses"])
    assert 1e-4 <= found["suggestion"] <= 10
    # The loss falls somewhere along the sweep (pretrained features learn quickly).
    assert min(found["losses"]) < found["losses"][0] - 0.1
    with pytest.raises(ValueError, match="need 0 < start < end"):
        lr_find(net, train, start=1, end=0.1)


def test_train_classifier_default_recipe_fine_tunes_in_stages(shared, tmp_path):
    photos = clothing.copy_photos(shared, tmp_path / "photos", per_class=8, split="train")
    _, weights = clothing.paths(shared)
    clf = train_classifier(photos, recipe="staged", weights=str(weights), image_size=64,
                           epochs=1, ctx=CPU, out=str(tmp_path / "model"))
    assert clf.meta["recipe"] == "fine_tune head x1, last_k:2 x1, last_k:4 x1"
    # where the time went, per stage in order (unaugmented, each stage caches its frozen
    # prefix's features first); writing is timed after the folder is written: in the
    # returned meta only
    timings = clf.meta["timings"]
    assert [s["regime"] for s in timings["stages"]] == ["head", "last_k:2", "last_k:4"]
    assert all(s["features_s"] > 0 and s["steps_s"] > 0 for s in timings["stages"])
    assert timings["write_s"] > 0
    saved = json.loads((tmp_path / "model" / "model.json").read_text())
    assert "write_s" not in saved["timings"] and "decode_s" in saved["timings"]
    # and what computed it: float32 (no AMP in this process), oneDNN's kernels
    assert saved["precision"] == "float32" and saved["kernels"]["onednn"] is True
    rows = clf.meta["history"]["epochs"]
    assert [r["regime"] for r in rows] == ["head", "last_k:2", "last_k:4"]
    assert clf.meta["history"]["settings"]["backbone_lr_mult"] == 0.1
    assert 0 <= clf.meta["val_accuracy"] <= 1 and "test_accuracy" not in clf.meta
    assert all(p.lr_mult == 1.0 for p in clf.net.collect_params().values())
