"""EGBAD (Zenati et al. 2018, BiGAN-based; docs/design.md, section 9), DCGAN-sized for images.

The papers leave the architecture open; this project's choice, stated here:
  - encoder E: DCGANEncoder(nz, ngf) (the GANomaly encoder), x -> z (B, nz)
  - generator G: DCGANDecoder(ngf), z -> x, tanh
  - joint discriminator D(x, z): x through the DCGAN pyramid without its last conv (ndf,
    B x 4 x 4 x C, flattened); z through Dense(nz -> 512) + LReLU(0.2); concatenate, then
    Dense(-> 1024) + LReLU(0.2) = the features f(x, z); Dense(1024 -> 1) = the logit.
E and G live in one module (EGBADGenerator), so they are two sub-trees ("encoder",
"decoder") of TrainState.g_params. Calling the module on x returns G(E(x)), E(x).
D called without z (as the generic initialisation does) sees z = 0; its parameters do not
depend on z's value.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.ganomaly import DCGANDecoder, DCGANEncoder
from sagan_jax.models.layers import at_least_f32, bias_init, weight_init


def Dense(features, name):
    """Dense layers act on (B, features) vectors: at least float32 whatever the network's
    dtype."""
    return nn.Dense(features, kernel_init=weight_init, bias_init=bias_init,
                    param_dtype=jnp.float32, name=name)


class EGBADGenerator(nn.Module):
    """E and G; compute in ``dtype`` (None: the inputs'; float32 parameters and BatchNorm
    statistics), outputs at least float32."""

    ngf: int = 64
    nz: int = 100
    isize: int = 32
    axis_name: Optional[str] = None
    dtype: Any = None

    def setup(self):
        self.encoder = DCGANEncoder(self.nz, self.ngf, self.axis_name, dtype=self.dtype)
        self.decoder = DCGANDecoder(self.isize, self.ngf, 3, self.axis_name, self.dtype)

    def encode(self, x, train: bool = True, update_stats: bool = True):
        code, _ = self.encoder(x, train, update_stats)
        return at_least_f32(code.reshape(x.shape[0], -1))

    def decode(self, z, train: bool = True, update_stats: bool = True):
        x = self.decoder(z.reshape(z.shape[0], 1, 1, -1), train, update_stats)
        return at_least_f32(x)

    def __call__(self, x, train: bool = True, update_stats: bool = True):
        z = self.encode(x, train, update_stats)
        return self.decode(z, train, update_stats), z


class EGBADDiscriminator(nn.Module):
    """D(x, z) -> (logit (B,), features (B, 1024))."""

    ndf: int = 64
    nz: int = 100
    hidden_z: int = 512
    hidden: int = 1024
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, z=None, train: bool = True, update_stats: bool = True):
        b, dt = x.shape[0], self.dtype
        if z is None:
            z = jnp.zeros((b, self.nz), x.dtype)
        _, hx = DCGANEncoder(1, self.ndf, self.axis_name, with_final=False, dtype=dt,
                             name="x_path")(x, train, update_stats)
        hz = nn.leaky_relu(Dense(self.hidden_z, "z_dense")(z.reshape(b, -1)), 0.2)
        h = jnp.concatenate([at_least_f32(hx.reshape(b, -1)), hz], axis=-1)
        features = nn.leaky_relu(Dense(self.hidden, "joint_dense")(h), 0.2)
        logit = Dense(1, "classifier")(features)
        return at_least_f32(logit.reshape(b)), at_least_f32(features)
