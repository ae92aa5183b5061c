"""ResNet family: architecture switches (depth, width, residual, batch norm), training on digits, probes on BN."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from framework.callbacks.hessian_probe import hessian_report
from framework.models.components.landscape.resnet import BasicBlock, ResNetFamily
from framework.models.resnet_classifier import ResNetClassifier


def _count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("n", [1, 3])
def test_depth_width_and_switches(n):
    net = ResNetFamily(in_channels=1, num_classes=10, width=8, blocks_per_stage=n)
    assert net.depth == 6 * n + 2
    # 6n block convolutions + the stem, plus two 1x1 projection shortcuts.
    assert _count(net, torch.nn.Conv2d) == 6 * n + 1 + 2
    assert net.classifier.in_features == 32
    plain = ResNetFamily(in_channels=1, num_classes=10, width=8, blocks_per_stage=n, residual=False)
    assert _count(plain, torch.nn.Conv2d) == 6 * n + 1
    no_bn = ResNetFamily(in_channels=3, num_classes=4, width=8, blocks_per_stage=n, batch_norm=False)
    assert _count(no_bn, torch.nn.BatchNorm2d) == 0
    assert no_bn(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_resnet20_parameter_count():
    net = ResNetFamily(in_channels=3, num_classes=10, width=16, blocks_per_stage=3)
    count = sum(p.numel() for p in net.parameters())
    # ResNet-20 has ~0.27 M parameters (272 474 with option-A shortcuts; option B adds the 1x1 projections).
    assert 0.26e6 < count < 0.29e6


def test_residual_connection_carries_the_input():
    torch.manual_seed(0)
    block = BasicBlock(4, 4, stride=1, residual=True, batch_norm=False).eval()
    plain = BasicBlock(4, 4, stride=1, residual=False, batch_norm=False).eval()
    for b in (block, plain):
        torch.nn.init.zeros_(b.conv2.weight)
        torch.nn.init.zeros_(b.conv2.bias)
    x = torch.rand(2, 4, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    torch.testing.assert_close(plain(x), torch.zeros_like(x))


@pytest.mark.slow
def test_training_on_digits_improves_accuracy(tmp_path):
    from framework.datamodules.digits_classification import DigitsClassification

    pl.seed_everything(0, verbose=False)
    data = DigitsClassification(batch_size=64, shift="none", train_subset=512)
    model = ResNetClassifier(width=8, blocks_per_stage=1,
                             optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, data)
    assert float(trainer.callback_metrics["val/accuracy"]) > 0.5


def test_hessian_probe_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = ResNetClassifier(width=4, blocks_per_stage=1)
    model.train()
    batch = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    stats = [b.clone() for b in model.buffers()]
    report = hessian_report(model, [batch], top_k=1, max_iter=5, trace_samples=3, density_steps=4,
                            hvp_method="double_backward")
    for a, b in zip(stats, model.buffers()):
        assert torch.equal(a, b)
    assert model.training
    model.eval()
    with torch.no_grad():
        assert report.loss == pytest.approx(float(model.loss(batch)), rel=1e-5)


def test_bad_settings():
    with pytest.raises(ValueError, match="width"):
        ResNetFamily(in_channels=1, num_classes=10, width=0)
    with pytest.raises(ValueError, match="blocks_per_stage"):
        ResNetClassifier(blocks_per_stage=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ResNetClassifier(label_smoothing=1.0)
