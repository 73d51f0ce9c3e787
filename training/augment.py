"""Batched training augmentations that make the camera useless as a cue.

Measured on the Kaggle set (issue 13): its malignant photos have darker corners (a dermatoscope's dark
round field), a bluer cast and another resolution and compression than its benign ones, so a model can
learn "which camera" instead of "which lesion". Each ingredient here breaks one such link by giving
every class every camera look:

- ``geometry``: any rotation, flips, and zoom from "the lesion is a small part of the frame" to "the
  lesion fills nearly all of it" (the area outside the photo is filled with the photo's own border
  colour, never a mirror image that would copy the lesion);
- ``rim``: a dark round field / vignette of random radius, softness, darkness and centre;
- ``colour``: colour casts and white-balance shifts (per-channel gains), brightness, contrast, gamma
  and saturation;
- ``blur``: Gaussian blur (focus);
- ``rescale_jpeg``: random down-and-up scaling with JPEG re-compression (the sources differ in
  resolution and compression);
- ``hair``: dark hair-like curves;
- ``patches``: a block of solid-coloured cells (1-3 rows of 1-6) off the centre, near an edge or a
  corner, as stickers, rulers and colour-calibration charts appear in clinic photos (off by default;
  a run that turns it on records it, and `training.checks`' colour-chart probe is then no longer a
  look the model never saw).

Each takes a probability per image (0 turns it off); `AUGMENT_DEFAULTS` is what the shipped models
were trained with, and the run's config and model card record the values used. All of it runs on a
float NCHW batch in [0, 255], on the batch's device, with a seeded generator, so a run is
reproducible and one call costs a few milliseconds per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_DEFAULTS: dict[str, float] = {
    "geometry": 1.0,
    "rim": 0.5,
    "colour": 0.9,
    "blur": 0.25,
    "rescale_jpeg": 0.5,
    "hair": 0.3,
    "patches": 0.0,
}
# Zoom range, as the scale of the sampled area relative to the photo (log-uniform): < 1 zooms in,
# > 1 zooms out (the lesion becomes a smaller part of the frame).
ZOOM = (0.6, 1.8)


def augment_settings(given: dict | None = None) -> dict[str, float]:
    """The defaults updated with `given`; unknown names are an error (a typo must not train silently)."""
    out = dict(AUGMENT_DEFAULTS)
    for k, v in (given or {}).items():
        if k not in AUGMENT_DEFAULTS:
            raise ValueError(f"unknown augmentation {k!r}; known: {', '.join(AUGMENT_DEFAULTS)}")
        v = float(v)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"augmentation {k}: a probability between 0 and 1, not {v}")
        out[k] = v
    return out


def parse_augment(text: str | None) -> dict[str, float]:
    """'rim=0,hair=0.5' or 'none' (all off) or 'default' -> settings."""
    if not text or text == "default":
        return augment_settings()
    if text == "none":
        return {k: 0.0 for k in AUGMENT_DEFAULTS}
    given = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        given[name.strip()] = value.strip() if value else 1.0
    return augment_settings(given)


class _Rand:
    """Uniform draws from a CPU generator, moved to the batch's device (reproducible on any device)."""

    def __init__(self, generator, device):
        self.g, self.device = generator, device

    def __call__(self, *shape, lo=0.0, hi=1.0):
        return (lo + (hi - lo) * torch.rand(*shape, generator=self.g)).to(self.device)

    def chosen(self, n: int, p: float) -> torch.Tensor:
        return self(n) < p


def _base_grid(h: int, w: int, device) -> torch.Tensor:
    """(h*w, 3) pixel centres in [-1, 1] plus a ones column (F.affine_grid's, ~4x faster on CPU)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).view(h * w, 3)


def _geometry(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    n, _, h, w = x.shape
    angle = r(n, hi=2 * math.pi)
    scale = torch.exp(r(n, lo=math.log(ZOOM[0]), hi=math.log(ZOOM[1])))
    aspect = torch.exp(r(n, lo=-0.1, hi=0.1))
    flip = torch.where(r(n) < 0.5, -1.0, 1.0)
    shift = r(n, 2, lo=-0.08, hi=0.08) * scale[:, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = scale * aspect * flip, scale / aspect
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1),
                         torch.stack([sin * sx, cos * sy, shift[:, 1]], 1)], 1)
    grid = torch.matmul(_base_grid(h, w, x.device), theta.transpose(1, 2)).view(n, h, w, 2)
    # Fill outside the photo with its border colour (skin), so zooming out never copies the lesion:
    # sample (photo - border) with zero padding, then add the border colour back everywhere.
    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2), x[:, :, :, :2].flatten(2),
                        x[:, :, :, -2:].flatten(2)], 2).mean(dim=2)[:, :, None, None]
    out = F.grid_sample(x - border, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + border


def _radius_grid(n: int, h: int, w: int, r: _Rand, device) -> torch.Tensor:
    """Distance of each pixel from a per-image centre near the middle; corners are at about 1.41."""
    ys = torch.linspace(-1, 1, h, device=device).view(1, h, 1)
    xs = torch.linspace(-1, 1, w, device=device).view(1, 1, w)
    c = r(n, 2, lo=-0.12, hi=0.12)
    return torch.sqrt((xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2)


def _rim(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    n, _, h, w = x.shape
    dist = _radius_grid(n, h, w, r, x.device)
    radius = r(n, lo=0.7, hi=1.25)[:, None, None]
    soft = r(n, lo=0.01, hi=0.3)[:, None, None]
    dark = r(n, lo=0.55, hi=1.0)[:, None, None]
    mask = (torch.sigmoid((dist - radius) / soft) * dark)[:, None]
    rim_colour = r(n, 1, 1, 1, lo=0.0, hi=35.0)
    return x * (1 - mask) + rim_colour * mask


def _colour(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    n = x.shape[0]
    v = x / 255.0
    gains = torch.exp(torch.randn(n, 3, 1, 1, generator=r.g).to(x.device) * 0.12)
    blue = r.chosen(n, 0.25).view(n, 1, 1, 1)  # a stronger blue cast, as one outside source has
    blue_gain = torch.stack([1 - r(n, lo=0.0, hi=0.2), torch.ones(n, device=x.device), 1 + r(n, lo=0.05, hi=0.35)], 1)
    gains = torch.where(blue, gains * blue_gain.view(n, 3, 1, 1), gains)
    v = v * gains * torch.exp(r(n, 1, 1, 1, lo=-0.25, hi=0.25))  # brightness
    v = v.clamp(0, 1) ** torch.exp(r(n, 1, 1, 1, lo=-0.3, hi=0.3))  # gamma
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * r(n, 1, 1, 1, lo=0.7, hi=1.3) + mean  # contrast
    grey = v.mean(dim=1, keepdim=True)
    v = (v - grey) * r(n, 1, 1, 1, lo=0.7, hi=1.3) + grey  # saturation
    return v.clamp(0, 1) * 255.0


def _blur(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    """Defocus: an antialiased shrink by 1.5-3.5x and bilinear enlargement back (a cheap, smooth blur)."""
    h, w = x.shape[-2:]
    f = float(r(1, lo=1.5, hi=3.5))
    small = F.interpolate(x, size=(max(8, int(h / f)), max(8, int(w / f))), mode="bilinear", antialias=True,
                          align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _rescale_jpeg(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    from torchvision.io import decode_jpeg, encode_jpeg

    n, _, h, w = x.shape
    f = float(r(1, lo=0.35, hi=0.9))
    small = F.interpolate(x, size=(max(16, int(h * f)), max(16, int(w * f))), mode="bilinear", antialias=True,
                          align_corners=False)
    u8 = small.round().clamp(0, 255).to(torch.uint8).cpu()
    qualities = (r(n, lo=35, hi=95)).round().int().tolist()
    decoded = [decode_jpeg(encode_jpeg(img, quality=q)) for img, q in zip(u8, qualities)]
    small = torch.stack(decoded).to(x.device, x.dtype)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


_HAIR_BANK: dict[tuple[int, int], torch.Tensor] = {}
HAIR_BANK_SIZE = 64


def hair_masks(h: int, w: int, count: int = HAIR_BANK_SIZE, max_lines: int = 6, seed: int = 0) -> torch.Tensor:
    """`count` masks (bool, count x h x w) of 1-6 thin dark curves each, made once per image size;
    each use picks one and turns it by a random symmetry of the square, so 8 x count looks."""
    key = (h, w)
    if key not in _HAIR_BANK:
        g = torch.Generator().manual_seed(seed)
        r = _Rand(g, "cpu")
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
        n, k = count, max_lines
        p0 = r(n, k, 2, lo=-1, hi=1)
        ang = r(n, k, hi=math.pi)
        bend = r(n, k, lo=-0.6, hi=0.6)[..., None, None]
        half_len = r(n, k, lo=0.2, hi=0.9)[..., None, None]
        width = r(n, k, lo=0.6, hi=1.8)[..., None, None] * 2 / h  # pixels -> normalised units
        live = (torch.arange(k).view(1, k) < (r(n, 1) * k).floor() + 1)[..., None, None]
        dx, dy = xs - p0[..., 0, None, None], ys - p0[..., 1, None, None]
        cos, sin = torch.cos(ang)[..., None, None], torch.sin(ang)[..., None, None]
        along = dx * cos + dy * sin
        across = -dx * sin + dy * cos - bend * along ** 2
        _HAIR_BANK[key] = ((across.abs() < width) & (along.abs() < half_len) & live).any(1)
    return _HAIR_BANK[key]


def _hair(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    n, _, h, w = x.shape
    bank = hair_masks(h, w)
    pick = (r(n) * len(bank)).long().clamp(max=len(bank) - 1).cpu()
    masks = bank[pick]
    k = int(r(1, hi=4).floor().clamp(max=3))
    masks = torch.rot90(masks, k, dims=(1, 2)) if h == w else masks
    if float(r(1)) < 0.5:
        masks = masks.flip(2)
    mask = masks[:, None].to(x.device, x.dtype)
    colour = r(n, 3, 1, 1, lo=10, hi=70)
    return x * (1 - mask) + colour * mask


def _patches(x: torch.Tensor, r: _Rand) -> torch.Tensor:
    """Each image gets one block of rows x cols solid cells of random colours, 12-35 % of the side
    across, placed against a random edge or corner (never over the centre, where the lesion is)."""
    n, _, h, w = x.shape
    out = x.clone()
    for i in range(n):
        bw = max(2, int(w * float(r(1, lo=0.12, hi=0.35))))
        bh = max(2, int(h * float(r(1, lo=0.08, hi=0.3))))
        rows, cols = int(r(1, lo=1, hi=4).floor().clamp(max=3)), int(r(1, lo=1, hi=7).floor().clamp(max=6))
        margin_y, margin_x = int(h * 0.04 * float(r(1))), int(w * 0.04 * float(r(1)))
        top = float(r(1)) < 0.5
        y0 = margin_y if top else h - bh - margin_y
        x0 = int((w - bw) * float(r(1)))
        if float(r(1)) < 0.5:  # against a side instead: swap the roles of the two axes
            left = float(r(1)) < 0.5
            x0 = margin_x if left else w - bw - margin_x
            y0 = int((h - bh) * float(r(1)))
        colours = r(rows * cols, 3, lo=0.0, hi=255.0)
        for k in range(rows * cols):
            rr, cc = divmod(k, cols)
            ys = slice(y0 + rr * bh // rows, y0 + (rr + 1) * bh // rows)
            xs = slice(x0 + cc * bw // cols, x0 + (cc + 1) * bw // cols)
            out[i, :, ys, xs] = colours[k].view(3, 1, 1)
    return out


# Patches after the geometry (they stay off the centre) and before the camera's own looks (a rim, blur,
# a colour cast and compression touch them as they touch the skin).
STEPS = (("geometry", _geometry), ("hair", _hair), ("patches", _patches), ("rim", _rim), ("blur", _blur),
         ("colour", _colour), ("rescale_jpeg", _rescale_jpeg))


def augment(batch: torch.Tensor, generator: torch.Generator | None = None, settings: dict | None = None
            ) -> torch.Tensor:
    """Augment a float NCHW batch in [0, 255]; each step on the images its probability picks."""
    s = augment_settings(settings)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    r = _Rand(g, batch.device)
    x = batch.float()
    n = x.shape[0]
    for name, step in STEPS:
        p = s.get(name, 0.0)
        if p <= 0:
            continue
        pick = r.chosen(n, p)
        if name == "geometry" and p >= 1.0:
            x = step(x, r)
            continue
        idx = torch.nonzero(pick).flatten()
        if len(idx):
            x = x.index_copy(0, idx, step(x[idx], r))
    return x.clamp(0, 255)
