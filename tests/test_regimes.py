"""Regimes: after one optimiser step, exactly the planned parameters moved; BN stats kept."""
import mxnet as mx
import numpy as np
import pytest

import gluonft
from gluonft.backbones import feature_blocks
from gluonft.datasets import ImageSet
from gluonft.regimes import frozen_prefix

CPU = mx.cpu()


def _batch(n=16, side=32, classes=10, seed=0):
    rng = np.random.RandomState(seed)
    return ImageSet(rng.randint(0, 256, (n, side, side, 3)).astype(np.uint8),
                    (np.arange(n) % classes).astype(np.int32),
                    tuple(f"c{i}" for i in range(classes)), "random pixels")


def _snapshot(net):
    return {p.name: p.data().asnumpy().copy() for p in net.collect_params().values()}


def _block_params(net, step_ids):
    steps = list(net.features._children.values())
    names = set()
    for i in step_ids:
        names |= set(steps[i].collect_params().keys())
    return names


def _is_stat(name):
    return name.endswith(("running_mean", "running_var"))


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("regime", ["head", "last_k:1", "last_k:2", "full", "scratch"])
def test_one_step_moves_exactly_the_trainable_parameters(regime, hybridize):
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU)
    if hybridize:  # a graph compiled before the regime must not keep the old BN settings
        net.hybridize()
        net(mx.nd.zeros((1, 3, 32, 32)))
    plan = gluonft.apply_regime(net, regime, seed=1)
    before = _snapshot(net)
    data = _batch()
    gluonft.fit(net, data, epochs=1, batch_size=len(data), lr=0.1, ctx=CPU, progress=False,
                hybridize=hybridize)  # one batch: one optimiser step
    after = _snapshot(net)

    blocks = feature_blocks(net)
    trainable_names = set(net.output.collect_params().keys())
    for block, (label, steps) in zip(plan.blocks, blocks):
        assert block.label == label
        if block.trainable:
            trainable_names |= _block_params(net, steps)
    moved = {n for n in before if not np.array_equal(before[n], after[n])}
    weights_moved = {n for n in moved if not _is_stat(n)}
    stats_moved = {n for n in moved if _is_stat(n)}
    assert weights_moved == {n for n in trainable_names if not _is_stat(n)}
    # Frozen BatchNorm kept its running statistics; trainable BatchNorm updated them.
    assert stats_moved == {n for n in trainable_names if _is_stat(n)}
    assert set(net.output.collect_params().keys()) <= weights_moved


def test_global_bn_policy_keeps_every_running_statistic_while_weights_train():
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU)
    plan = gluonft.apply_regime(net, "full", bn="global")
    assert plan.frozen_batchnorms == 21 and plan.frozen_steps == 0  # 19 + 2 projection BNs
    before = _snapshot(net)
    gluonft.fit(net, _batch(), epochs=1, batch_size=16, lr=0.1, ctx=CPU, progress=False)
    after = _snapshot(net)
    moved = {n for n in before if not np.array_equal(before[n], after[n])}
    assert not {n for n in moved if _is_stat(n)}
    assert {n for n in before if not _is_stat(n)} == moved


@pytest.mark.parametrize("name, count", [("cifar_resnet20_v1", 4), ("resnet18_v1", 5),
                                         ("mobilenet0.25", 14), ("vgg11", 7)])
def test_last_k_trains_exactly_the_last_k_documented_blocks(name, count):
    net = gluonft.load_backbone(name, classes=10, weights=None, ctx=CPU)
    blocks = feature_blocks(net)
    assert len(blocks) == count, [label for label, _ in blocks]
    for k in range(1, count + 1):
        plan = gluonft.apply_regime(net, "last_k", k=k)
        assert plan.trainable_blocks == [label for label, _ in blocks[-k:]]
        expected = set(net.output.collect_params().keys())
        for _, steps in blocks[-k:]:
            expected |= _block_params(net, steps)
        trainable = {p.name for p in net.collect_params().values() if p.grad_req != "null"}
        assert trainable == {n for n in expected if not _is_stat(n)}
        assert frozen_prefix(net) == plan.frozen_steps == blocks[-k][1][0]
    for bad in (0, count + 1, 99):
        with pytest.raises(ValueError, match=rf"k={bad}"):
            gluonft.apply_regime(net, "last_k", k=bad)


def test_head_regime_freezes_the_whole_backbone_and_documents_it():
    net = gluonft.load_backbone("resnet18_v1", classes=10, weights=None, ctx=CPU)
    plan = gluonft.apply_regime(net, "head")
    assert plan.trainable_blocks == [] and plan.frozen_steps == len(net.features)
    assert plan.trainable_params == plan.head_params == 512 * 10 + 10
    assert plan.trainable_params + plan.frozen_params == sum(
        p.data().size for p in net.collect_params().values() if not _is_stat(p.name))
    assert "head only" in plan.describe()
    assert plan.to_dict()["frozen_blocks"][0].startswith("features.0")


def test_describe_names_the_trained_blocks():
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU)
    one, two = (gluonft.apply_regime(net, "last_k", k=k) for k in (1, 2))
    last, before = one.trainable_blocks[0], two.trainable_blocks[0]
    assert f"1 of 4 backbone blocks ({last});" in one.describe()  # one block named once
    assert f"2 of 4 backbone blocks ({before} .. {last});" in two.describe()


def test_unknown_regime_and_bad_k_are_clear_errors():
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=CPU)
    with pytest.raises(ValueError, match="unknown regime 'partial'.*head, last_k, full, scratch"):
        gluonft.apply_regime(net, "partial")
    with pytest.raises(ValueError, match="last_k needs k"):
        gluonft.apply_regime(net, "last_k")
    with pytest.raises(ValueError, match="'last_k:x'"):
        gluonft.apply_regime(net, "last_k:x")
    with pytest.raises(ValueError, match="only applies to the last_k"):
        gluonft.apply_regime(net, "full", k=2)
    with pytest.raises(ValueError, match="BatchNorm policy bn='none'"):
        gluonft.apply_regime(net, "head", bn="none")


def test_scratch_reinitialises_the_backbone(shared):
    weights = str(shared / "weights" / "cifar_resnet20_v1-cifar10.params")
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=weights, ctx=CPU)
    first = net.features[0].weight.data().asnumpy().copy()
    plan = gluonft.apply_regime(net, "scratch", seed=3)
    assert plan.reinitialised
    assert not np.array_equal(first, net.features[0].weight.data().asnumpy())
    norm = net.features[1]
    assert np.array_equal(norm.running_var.data().asnumpy(), np.ones(norm.running_var.shape))


def test_the_batchnorm_line_states_what_is_true_of_the_net():
    net = gluonft.load_backbone("cifar_resnet20_v1", classes=10, weights=None, ctx=mx.cpu())
    assert "all 21 BatchNorm layers keep their pretrained statistics" in \
        gluonft.apply_regime(net, "head").describe()
    assert "14 of 21 BatchNorm layers (in the frozen blocks) keep their pretrained statistics, " \
           "the other 7 learn from the new data" in gluonft.apply_regime(net, "last_k:1").describe()
    for regime in ("full", "scratch"):  # nothing frozen: no "BatchNorm frozen" any more
        line = gluonft.apply_regime(net, regime).describe()
        assert "all 21 BatchNorm layers learn their statistics from the new data" in line
        assert "frozen;" not in line and "BatchNorm frozen" not in line
    assert "keep their pretrained statistics; their scale and shift still train" in \
        gluonft.apply_regime(net, "full", bn="global").describe()


def _smallest_of_each_family():
    """One backbone per family gluonft offers (the shortest name: usually the smallest)."""
    from gluonft.backbones import FAMILIES
    names = {}
    for family in FAMILIES:
        offered = gluonft.list_backbones(family=family.name)
        if offered:
            names[family.name] = min(offered, key=lambda n: (len(n), n))
    return sorted(names.items())


@pytest.mark.parametrize("family, name", _smallest_of_each_family())
def test_last_k_trains_k_blocks_that_have_weights_in_every_family(family, name):
    """The audit's MobileNetV3 case: a weightless block (a lone HardSwish) counted as a block,
    so last_k:1 trained the head alone while the plan said otherwise."""
    from gluonft.backbones import has_weights
    net = gluonft.load_backbone(name, classes=3, weights=None, ctx=CPU)
    steps = list(net.features._children.values())
    blocks = feature_blocks(net)
    for label, group in blocks:
        assert any(has_weights(steps[i]) for i in group), f"{name}: {label} has no weights"
    head = {p.name for p in net.output.collect_params().values()}
    for k in sorted({1, 2, len(blocks)}):
        plan = gluonft.apply_regime(net, "last_k", k=k)
        trainable = {p.name for p in net.collect_params().values() if p.grad_req != "null"}
        in_blocks = [label for label, group in blocks
                     if trainable & set().union(*(_block_params(net, [i]) for i in group))]
        assert in_blocks == [label for label, _ in blocks[-k:]], (name, k, in_blocks)
        assert trainable - head, f"{name}: last_k:{k} trains the head alone"
        assert f"{k} of {len(blocks)} backbone block" in plan.describe(), plan.describe()
        assert plan.trainable_blocks == [label for label, _ in blocks[-k:]]
        assert plan.trainable_params > plan.head_params
