"""Self-supervised objectives: each wraps a model and returns its loss on a batch.

``Contrastive`` is SimCLR for images (two random augmentations of each image) and SimCSE
for text (two dropout and token-drop views of each text), both with the NT-Xent loss.
``Denoising`` is a denoising autoencoder for the built-in CNN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .augment import ImageAugment


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalized-temperature cross-entropy: row ``i`` of ``a`` must pick row ``i`` of ``b``
    (and back) among all ``2n - 1`` other rows of both."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)  # (2n, d)
    n = a.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def _uniform(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uniform noise drawn on the CPU (one random stream wherever the model runs)."""
    return torch.rand(shape).to(like.device)


class Contrastive(nn.Module):
    """Pull two views of an input together, push other inputs away.

    Args:
        model: The network being pretrained (its parameters are trained).
        embed: Maps a batch of inputs to ``(batch, dim)`` vectors.
        view: Draws a random view of a batch of inputs.
        temperature: Of the NT-Xent loss.
    """

    _embed: Callable[..., torch.Tensor]

    def __init__(
        self,
        model: nn.Module,
        embed: Callable[..., torch.Tensor],
        view: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
        temperature: float,
    ) -> None:
        super().__init__()
        self.model = model
        # kept outside the module tree: when ``embed`` is ``model`` itself, registering it
        # twice would store every weight twice in checkpoints
        object.__setattr__(self, "_embed", embed)
        self._view = view
        self.temperature = temperature

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        a = self._embed(*self._view(inputs))
        b = self._embed(*self._view(inputs))
        return nt_xent(a, b, self.temperature)


def image_views(augment: ImageAugment | None = None) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Random affine transform plus brightness and contrast jitter, per image."""
    augment = augment or ImageAugment(rotation=15.0, translation=0.15, scale=(0.8, 1.2))

    def view(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        (x,) = inputs
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        out = augment(x.cpu(), generator).to(x.device)
        n = x.shape[0]
        contrast = 0.6 + 0.8 * _uniform((n, 1, 1, 1), x)
        shift = (_uniform((n, 1, 1, 1), x) - 0.5) * 0.8
        return (out * contrast + shift,)

    return view


def text_views(drop: float = 0.1) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Hide a random ``drop`` share of each text's tokens from attention (the first token,
    [CLS], always stays); dropout inside the encoder adds its own noise while training."""

    def view(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        ids, mask = inputs
        keep = _uniform(tuple(mask.shape), mask) >= drop
        keep[:, 0] = True
        return ids, mask * keep.to(mask.dtype)

    return view


class Denoising(nn.Module):
    """Reconstruct clean images from corrupted ones (Gaussian noise and a masked square).

    ``model`` maps ``(batch, c, h, w)`` images to ``(batch, c * h * w)`` outputs: its last
    layer is the decoder, everything before it the encoder kept for fine-tuning.
    """

    def __init__(self, model: nn.Module, noise: float = 0.3, mask: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.noise = noise
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        noisy = x + self.noise * (2 * _uniform(tuple(x.shape), x) - 1) * 1.7320508
        side_h, side_w = max(1, round(h * self.mask)), max(1, round(w * self.mask))
        top = (_uniform((n,), x) * (h - side_h + 1)).long().clamp(max=h - side_h)
        left = (_uniform((n,), x) * (w - side_w + 1)).long().clamp(max=w - side_w)
        rows = torch.arange(h, device=x.device)[None, :, None]
        cols = torch.arange(w, device=x.device)[None, None, :]
        hidden = (
            (rows >= top[:, None, None])
            & (rows < (top + side_h)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + side_w)[:, None, None])
        )  # (n, h, w)
        noisy = noisy.masked_fill(hidden[:, None], 0.0)
        return F.mse_loss(self.model(noisy).reshape(x.shape).float(), x.float())
