"""SAGAN generator (attention U-Net) and DCGAN discriminator in PyTorch, NCHW (docs/design.md,
sections 3-4).

Written from docs/design.md, not from the authors' code. Names mirror the Flax modules in
sagan_jax.models so that weights convert by name (see convert.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """docs/design.md, section 4: conv / linear weights ~ N(0, 0.02), biases 0, BN scale ~ N(1,
    0.02), BN offset 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k (groups=in, in*m outputs, bias, 'same') then pointwise 1x1 (bias)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, kernels_per_layer: int = 2):
        super().__init__()
        self.depthwise = nn.Conv2d(
            cin, cin * kernels_per_layer, kernel_size, padding=kernel_size // 2, groups=cin
        )
        self.pointwise = nn.Conv2d(cin * kernels_per_layer, cout, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class DoubleConv(nn.Module):
    """conv(in->mid) -> BN -> ReLU -> conv(mid->out) -> BN -> ReLU (conv: DSC or plain 3x3)."""

    def __init__(self, cin, cout, mid=None, use_dsc=True, kernels_per_layer=2):
        super().__init__()
        mid = mid or cout

        def conv(i, o):
            if use_dsc:
                return DepthwiseSeparableConv(i, o, 3, kernels_per_layer)
            return nn.Conv2d(i, o, 3, padding=1)

        self.conv1, self.bn1 = conv(cin, mid), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = conv(mid, cout), nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class ChannelAttention(nn.Module):
    """x * sigmoid(mlp(avgpool x) + mlp(maxpool x)); mlp = Linear(C, C/r) -> ReLU -> Linear."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        hidden = max(c // reduction, 1)
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        mlp = lambda v: self.fc2(F.relu(self.fc1(v)))
        att = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
        return x * att[:, :, None, None]


class SpatialAttention(nn.Module):
    """[channel mean, channel max] -> 7x7 conv (2->1, no bias) -> BN(1) -> sigmoid; x * map."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        s = torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(s)))


class CBAM(nn.Module):
    def __init__(self, c: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(c, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))


class Down(nn.Module):
    """2x2 max pooling, then DoubleConv."""

    def __init__(self, cin, cout, use_dsc=True, kernels_per_layer=2):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(cin, cout, None, use_dsc, kernels_per_layer)

    def forward(self, x):
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Bilinear x2 (align_corners=True), pad to the skip, cat [skip, up], DoubleConv(mid=in//2)."""

    def __init__(self, cin, cout, use_dsc=True, kernels_per_layer=2):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(cin, cout, cin // 2, use_dsc, kernels_per_layer)

    def forward(self, x, skip):
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class SAGANGenerator(nn.Module):
    """Attention U-Net: DoubleConv + 4 Down, CBAM on every level, 4 Up, 1x1 output conv."""

    def __init__(self, ngf=64, in_channels=3, out_channels=3, use_dsc=True, use_cbam=True,
                 kernels_per_layer=2, pool_after_cbam=False):
        super().__init__()
        w = ngf
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)
        kw = dict(use_dsc=use_dsc, kernels_per_layer=kernels_per_layer)
        self.use_cbam, self.pool_after_cbam = use_cbam, pool_after_cbam
        self.inc = DoubleConv(in_channels, w, None, **kw)
        for i in range(1, 5):
            setattr(self, f"down{i}", Down(widths[i - 1], widths[i], **kw))
        if use_cbam:
            for i in range(5):
                setattr(self, f"cbam{i + 1}", CBAM(widths[i]))
        ins, outs = (16 * w, 8 * w, 4 * w, 2 * w), (4 * w, 2 * w, w, w)
        for i in range(4):
            setattr(self, f"up{i + 1}", Up(ins[i], outs[i], **kw))
        self.outc = nn.Conv2d(w, out_channels, 1)

    def forward(self, x):
        feats, atts = [], []
        h = self.inc(x)
        for i in range(5):
            if i > 0:
                src = atts[-1] if self.pool_after_cbam else feats[-1]
                h = getattr(self, f"down{i}")(src)
            feats.append(h)
            atts.append(getattr(self, f"cbam{i + 1}")(h) if self.use_cbam else h)
        y = atts[4]
        for i, skip in enumerate(reversed(atts[:4])):
            y = getattr(self, f"up{i + 1}")(y, skip)
        return self.outc(y)


class DCGANDiscriminator(nn.Module):
    """Returns (logit, features); D(x) = sigmoid(logit), features f(x) of shape (B, nz, 1, 1)."""

    def __init__(self, isize=32, nc=3, ndf=64, nz=100):
        super().__init__()
        if isize % 16:
            raise ValueError(f"image size {isize} must be a multiple of 16")
        self.initial_conv = nn.Conv2d(nc, ndf, 4, 2, 1, bias=False)
        size, c, i = isize // 2, ndf, 0
        while size > 4:
            setattr(self, f"pyramid_conv{i}", nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False))
            setattr(self, f"pyramid_bn{i}", nn.BatchNorm2d(2 * c))
            size, c, i = size // 2, 2 * c, i + 1
        self.n_pyramid = i
        self.final_conv = nn.Conv2d(c, nz, 4, 1, 0, bias=False)
        self.classifier = nn.Conv2d(nz, 1, 3, 1, 1, bias=False)

    def forward(self, x):
        h = F.leaky_relu(self.initial_conv(x), 0.2)
        for i in range(self.n_pyramid):
            h = getattr(self, f"pyramid_bn{i}")(getattr(self, f"pyramid_conv{i}")(h))
            h = F.leaky_relu(h, 0.2)
        features = self.final_conv(h)
        logit = self.classifier(features)
        return logit.reshape(x.shape[0]), features


def build_models(cfg):
    """(generator, discriminator) for a sagan_jax Config, initialised as docs/design.md, section
    4."""
    g = SAGANGenerator(cfg.ngf, 3, 3, cfg.use_dsc, cfg.use_cbam, cfg.kernels_per_layer,
                       cfg.pool_after_cbam)
    d = DCGANDiscriminator(cfg.isize, 3, cfg.ndf, cfg.nz)
    init_weights(g)
    init_weights(d)
    return g, d
