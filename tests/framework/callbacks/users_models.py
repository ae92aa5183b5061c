"""Tiny versions of the models users attach the project's callbacks to (no downloads, CPU-cheap).

* ``boring``: Lightning's own ``BoringModel`` (one Linear, unlabelled random batches).
* ``demo_transformer``: ``lightning.pytorch.demos.LightningTransformer`` (an ``nn.Transformer`` with SDPA attention)
  made tiny, on random tokens instead of WikiText-2.
* ``llama``: a Transformers ``LlamaForCausalLM`` (2 layers, hidden 16) in a LightningModule, dict batches.
* ``cnn_batchnorm``: a small CNN classifier with BatchNorm, ``(x, y)`` batches.
* ``ensemble``: a user's ensemble of 3 MLPs whose forward returns per-member logits ``[M, B, K]``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.demos import LightningTransformer, Transformer
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["MODEL_FACTORIES", "make_model"]


class RandomTokens(Dataset):
    """``(inputs [T], target [T])`` pairs of random tokens (the demo's WikiText-2 format, without the download)."""

    def __init__(self, *, vocab_size: int, length: int = 8, size: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab_size, (size, length + 1), generator=generator)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index, :-1], self.data[index, 1:]


class TinyDemoTransformer(LightningTransformer):
    """The demo ``LightningTransformer`` with a tiny ``Transformer`` and random tokens."""

    def __init__(self, vocab_size: int = 24) -> None:
        super().__init__(vocab_size=vocab_size)
        self.model = Transformer(vocab_size=vocab_size, ninp=8, nhead=2, nhid=8, nlayers=1, dropout=0.1)
        self.vocab_size = vocab_size

    def prepare_data(self) -> None:  # the demo downloads WikiText-2 here
        pass

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomTokens(vocab_size=self.vocab_size), batch_size=4)


class TinyLlama(pl.LightningModule):
    """A 2-layer ``LlamaForCausalLM`` (SDPA attention) trained on random token ids."""

    def __init__(self, vocab_size: int = 32) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=1, pad_token_id=None)
        self.model = LlamaForCausalLM(config)
        self.vocab_size = vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss

    def validation_step(self, batch, batch_idx):
        loss = self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        self.log("val_loss", loss, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _loader(self, seed: int) -> DataLoader:
        ids = torch.randint(0, self.vocab_size, (8, 8), generator=torch.Generator().manual_seed(seed))
        return DataLoader([{"input_ids": row} for row in ids], batch_size=4)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1)


def _labelled(shape: tuple[int, ...], classes: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, *shape, generator=generator)
    y = torch.randint(0, classes, (16,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=8)


class CnnWithBatchNorm(pl.LightningModule):
    """Conv → BatchNorm → ReLU → pool → Linear classifier on 1×8×8 images, K = 3."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        return _labelled((1, 8, 8), self.num_classes, 0)

    def val_dataloader(self) -> DataLoader:
        return _labelled((1, 8, 8), self.num_classes, 1)


class UserEnsemble(pl.LightningModule):
    """A user's ensemble: 3 MLPs (4 → 16 → 3); forward returns per-member logits ``[M, B, K]``."""

    def __init__(self, members: int = 3, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.features, self.classes = features, classes
        self.members = nn.ModuleList(nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, classes))
                                     for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        return sum(nn.functional.cross_entropy(member_logits, y) for member_logits in logits)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x).mean(0), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        return _labelled((self.features,), self.classes, 0)

    def val_dataloader(self) -> DataLoader:
        return _labelled((self.features,), self.classes, 1)


MODEL_FACTORIES = {
    "boring": BoringModel,
    "demo_transformer": TinyDemoTransformer,
    "llama": TinyLlama,
    "cnn_batchnorm": CnnWithBatchNorm,
    "ensemble": UserEnsemble,
}


def make_model(name: str, seed: int = 0) -> pl.LightningModule:
    """A fresh model ``name`` (same weights for the same seed)."""
    torch.manual_seed(seed)
    return MODEL_FACTORIES[name]()
