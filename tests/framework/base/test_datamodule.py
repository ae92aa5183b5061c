

def test_split_loaders_read_the_named_splits_and_refuse_a_missing_one():
    import pytest
    import torch
    from torch.utils.data import TensorDataset

    from framework.base import SplitDataModule

    class Splits(SplitDataModule):
        predict_split = "extra"

        def setup(self, stage=None):
            for i, name in enumerate(("train", "val", "test", "extra")):
                self.datasets[name] = TensorDataset(torch.full((6, 1), float(i)))

    dm = Splits(batch_size=3, seed=1)
    with pytest.raises(RuntimeError, match="Splits has no 'train' split \\(have: none\\); call setup\\(\\)"):
        dm.train_dataloader()
    dm.setup()
    for loader, value in ((dm.train_dataloader(), 0), (dm.val_dataloader(), 1), (dm.test_dataloader(), 2),
                          (dm.predict_dataloader(), 3)):
        assert {float(x) for (batch,) in loader for x in batch.flatten()} == {float(value)}
    assert dm.train_dataloader().sampler.__class__.__name__ == "EpochSeededRandomSampler"  # train is shuffled
    assert dm.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"
