"""Weight transfer between the Flax models (params + batch_stats) and the PyTorch reference
(state_dict), both ways.

Layouts: Flax convolutions are HWIO on NHWC maps, PyTorch's OIHW on NCHW. A Flax depthwise
kernel (k, k, 1, C*m) becomes PyTorch's grouped weight (C*m, 1, k, k) by the same HWIO->OIHW
transpose; output channel c*m + j reads input channel c in both. Dense kernels are (in, out)
in Flax and (out, in) in PyTorch. BatchNorm: scale/bias <-> weight/bias, batch_stats
mean/var <-> running_mean/running_var (num_batches_tracked is PyTorch-only bookkeeping,
unused with momentum 0.1).

Names: the PyTorch modules mirror the Flax scopes, except that Down/Up hold their DoubleConv
as ``.conv`` (``down1.conv.bn1`` <-> Flax ``down1/bn1``) and a DSC holds ``depthwise`` and
``pointwise`` convolutions (Flax ``depthwise_kernel`` ... leaves).
"""
from __future__ import annotations

import re

import numpy as np
import torch

_UNET_BLOCK = re.compile(r"^(down|up)\d+$")
_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "depthwise_kernel": "depthwise.weight",
    "depthwise_bias": "depthwise.bias",
    "pointwise_kernel": "pointwise.weight",
    "pointwise_bias": "pointwise.bias",
    "mean": "running_mean",
    "var": "running_var",
}


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _torch_key(path) -> str:
    scopes = [f"{s}.conv" if _UNET_BLOCK.match(s) else s for s in path[:-1]]
    return ".".join(scopes + [_LEAF_TO_TORCH[path[-1]]])


def flax_array_to_torch(a) -> np.ndarray:
    a = np.array(a, np.float32)
    if a.ndim == 4:  # HWIO -> OIHW (dense, depthwise and pointwise kernels alike)
        return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    if a.ndim == 2:  # Dense (in, out) -> Linear (out, in)
        return np.ascontiguousarray(a.T)
    return a


def torch_array_to_flax(a) -> np.ndarray:
    a = np.array(a, np.float32)
    if a.ndim == 4:  # OIHW -> HWIO
        return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return a


def flax_to_state_dict(params, batch_stats=None) -> dict:
    """A PyTorch state_dict (torch tensors) from Flax params (and batch_stats)."""
    sd = {}
    for path, v in _flatten(params):
        sd[_torch_key(path)] = torch.from_numpy(flax_array_to_torch(v))
    for path, v in _flatten(batch_stats or {}):
        key = _torch_key(path)
        sd[key] = torch.from_numpy(flax_array_to_torch(v))
        sd[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return sd


def load_flax_into_torch(module: torch.nn.Module, params, batch_stats=None) -> None:
    """Copy Flax weights into ``module`` (strict: every key must match, shapes included)."""
    sd = flax_to_state_dict(params, batch_stats)
    own = module.state_dict()
    if batch_stats is None:  # keep the module's own statistics
        sd.update({k: v for k, v in own.items() if k.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))})
    for k, v in own.items():  # keep PyTorch's bookkeeping counter
        if k.endswith("num_batches_tracked"):
            sd[k] = v.clone()
    bad = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"shape mismatch for {bad[:5]}")
    module.load_state_dict(sd, strict=True)


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def state_dict_to_flax(state_dict) -> tuple[dict, dict]:
    """(params, batch_stats) as nested dicts of NumPy arrays from a PyTorch state_dict."""
    params, stats = {}, {}
    for key, t in state_dict.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        a = t.detach().cpu().numpy()
        scopes = parts[:-1]
        if len(scopes) >= 2 and _UNET_BLOCK.match(scopes[0]) and scopes[1] == "conv":
            scopes = [scopes[0]] + scopes[2:]
        leaf = parts[-1]
        if scopes and scopes[-1] in ("depthwise", "pointwise"):
            leaf = f"{scopes[-1]}_{'kernel' if leaf == 'weight' else 'bias'}"
            scopes = scopes[:-1]
        elif leaf == "weight":
            leaf = "kernel" if a.ndim > 1 else "scale"
        elif leaf in ("running_mean", "running_var"):
            _set(stats, tuple(scopes) + ({"running_mean": "mean", "running_var": "var"}[leaf],), a.astype(np.float32))
            continue
        _set(params, tuple(scopes) + (leaf,), torch_array_to_flax(a))
    return params, stats
