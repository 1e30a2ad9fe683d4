"""The baselines (docs/design.md, section 9): parameter counts against independent formulas of
their PyTorch definitions, forward shapes, one training step each, the per-model score (formula and
direction), the model dispatch, and experiments/table2.py's bookkeeping."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.config import Config, ConfigError
from sagan_jax.data.digits import load_digits_anomaly
from sagan_jax.data.pipeline import to_float_np
from sagan_jax import methods
from sagan_jax.methods import build_models
from sagan_jax.training.evaluate import final_score
from sagan_jax.methods.summary import param_counts
from sagan_jax.training.evaluate import score_images
from sagan_jax.training.state import init_state, make_optimizers
from sagan_jax.training.step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- PyTorch parameter counts, written from the layer lists in docs/design.md, section 9 --------
def conv(cin, cout, k=4, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def dcgan_encoder(isize, nc, w, nz, final=True):
    n, size, c = conv(nc, w), isize // 2, w
    while size > 4:
        n += conv(c, 2 * c) + bn(2 * c)
        size, c = size // 2, 2 * c
    return n + (conv(c, nz) if final else 0)


def dcgan_decoder(isize, nz, w, nc):
    c = w * isize // 8
    n, size = conv(nz, c) + bn(c), 4
    while size < isize // 2:
        n += conv(c, c // 2) + bn(c // 2)
        size, c = size * 2, c // 2
    return n + conv(c, nc)


def unet(isize, nc, w):
    num_downs = int(np.log2(isize))
    blocks = [(nc, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)]
    blocks += [(8 * w, 8 * w)] * (num_downs - 5) + [(8 * w, 8 * w)]
    n = 0
    for k, (outer, inner) in enumerate(blocks):
        outermost, innermost = k == 0, k == len(blocks) - 1
        n += conv(outer, inner)                                      # downconv, no bias
        n += 0 if (outermost or innermost) else bn(inner)            # downnorm
        up_in = inner if innermost else 2 * inner
        n += conv(up_in, outer, bias=outermost)                      # upconv
        n += 0 if outermost else bn(outer)                           # upnorm
    return n


def basic_discriminator(isize, ndf, nz):
    return dcgan_encoder(isize, 3, ndf, nz) + conv(nz, 1, k=3)


def egbad_discriminator(isize, ndf, nz, hz=512, h=1024):
    cx = ndf * isize // 8  # channels of the 4x4 map
    flat = cx * 16
    return (dcgan_encoder(isize, 3, ndf, 1, final=False) + nz * hz + hz
            + (flat + hz) * h + h + h + 1)


EXPECTED = {
    "skip_ganomaly": lambda s, g, d, z: (unet(s, 3, g), basic_discriminator(s, d, z)),
    "ganomaly": lambda s, g, d, z: (2 * dcgan_encoder(s, 3, g, z) + dcgan_decoder(s, z, g, 3),
                                    dcgan_encoder(s, 3, d, 1)),
    "egbad": lambda s, g, d, z: (dcgan_encoder(s, 3, g, z) + dcgan_decoder(s, z, g, 3),
                                 egbad_discriminator(s, d, z)),
}


@pytest.mark.parametrize("model", sorted(EXPECTED))
@pytest.mark.parametrize("isize,ngf,ndf,nz", [(32, 64, 64, 100), (64, 32, 16, 50)])
def test_parameter_counts_equal_pytorch_formulas(model, isize, ngf, ndf, nz):
    c = param_counts(Config(model=model, isize=isize, ngf=ngf, ndf=ndf, nz=nz))
    assert (c["G"], c["D"]) == EXPECTED[model](isize, ngf, ndf, nz)


def test_parameter_counts_at_cifar_defaults():
    """The numbers quoted in docs (isize 32, ngf = ndf = 64, nz 100)."""
    counts = {m: param_counts(Config(model=m)) for m in EXPECTED}
    assert (counts["skip_ganomaly"]["G"], counts["skip_ganomaly"]["D"]) == (16_659_075, 1_069_700)
    assert (counts["ganomaly"]["G"], counts["ganomaly"]["D"]) == (3_206_528, 663_296)
    assert (counts["egbad"]["G"], counts["egbad"]["D"]) == (2_137_728, 5_431_553)


@pytest.mark.parametrize("model,isize", [("skip_ganomaly", 32), ("skip_ganomaly", 64),
                                         ("ganomaly", 16), ("ganomaly", 32), ("egbad", 32)])
def test_forward_shapes(model, isize):
    cfg = Config(model=model, isize=isize, ngf=8, ndf=8, nz=7)
    g, d = build_models(cfg)
    x = jax.ShapeDtypeStruct((2, isize, isize, 3), jnp.float32)
    g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    out = jax.eval_shape(lambda v, x: g.apply(v, x, train=False), g_vars, x)
    if model == "skip_ganomaly":
        assert out.shape == x.shape
        logit, feat = jax.eval_shape(lambda v, x: d.apply(v, x, train=False), d_vars, x)
        assert logit.shape == (2,) and feat.shape == (2, 1, 1, 7)
    elif model == "ganomaly":
        fake, li, lo = out
        assert fake.shape == x.shape and li.shape == lo.shape == (2, 7)
        logit, feat = jax.eval_shape(lambda v, x: d.apply(v, x, train=False), d_vars, x)
        assert logit.shape == (2,) and feat.shape == (2, 4, 4, 8 * isize // 8)
    else:
        recon, z = out
        assert recon.shape == x.shape and z.shape == (2, 7)
        zz = jax.ShapeDtypeStruct((2, 7), jnp.float32)
        logit, feat = jax.eval_shape(lambda v, x, z: d.apply(v, x, z, train=False), d_vars, x, zz)
        assert logit.shape == (2,) and feat.shape == (2, 1024)


def test_conv_transpose_matches_pytorch():
    torch = pytest.importorskip("torch")
    from sagan_jax.models.ganomaly import ConvT

    rng = np.random.RandomState(0)
    x = rng.randn(2, 5, 3, 4).astype(np.float32)  # NCHW
    for k, s, p, h in ((4, 2, 1, 5), (4, 1, 0, 1)):
        xi = rng.randn(2, 3, h, h).astype(np.float32)
        tconv = torch.nn.ConvTranspose2d(3, 6, k, s, p, bias=True)
        with torch.no_grad():
            ref = tconv(torch.from_numpy(xi)).numpy().transpose(0, 2, 3, 1)
        w = tconv.weight.detach().numpy()  # (in, out, k, k)
        m = ConvT(6, k, s, p, use_bias=True)
        params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)),
                             "bias": jnp.asarray(tconv.bias.detach().numpy())}}
        out = m.apply(params, jnp.asarray(xi.transpose(0, 2, 3, 1)))
        assert out.shape == ref.shape
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)
    del x


# ---- training step and scores ----------------------------------------------------------------
TINY = {"skip_ganomaly": dict(isize=32, ngf=8, ndf=8, nz=8),
        "ganomaly": dict(isize=16, ngf=8, ndf=8, nz=8),
        "egbad": dict(isize=16, ngf=8, ndf=8, nz=8)}


@pytest.mark.parametrize("model", sorted(TINY))
def test_training_steps_run_and_score_direction(model):
    """One step runs (finite losses, both networks change), then (Skip-GANomaly, GANomaly)
    after a few more steps on a fixed batch of digits the trained images score lower than the
    same images with strong noise: higher = more anomalous."""
    t = TINY[model]
    cfg = Config(model=model, batch_size=16, eval_batch_size=16, lr=2e-3, **t)
    g_tx, d_tx = make_optimizers(cfg, 100)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    step = make_train_step(cfg, g_tx, d_tx, donate=False)
    data = load_digits_anomaly("0", t["isize"], 0.2, seed=0)
    imgs = data.train.images[:16]
    x = jnp.asarray(to_float_np(imgs))
    new, m = step(state, x, jax.random.key(1))
    assert int(new.step) == 1
    for k in ("l_g", "l_d", "l_con"):
        assert np.isfinite(float(m[k])), (k, m)
    for a, b in ((state.g_params, new.g_params), (state.d_params, new.d_params)):
        assert any(not np.allclose(np.asarray(u), np.asarray(v))
                   for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    if model == "egbad":
        # A BiGAN learns G(E(x)) ~ x only late in training (E and G never see a residual
        # loss), so a few steps show nothing; its score is checked by formula below.
        return
    state = new
    for i in range(24):
        state, m = step(state, x, jax.random.key(2 + i))
    noisy = np.clip(imgs.astype(np.float32)
                    + np.random.RandomState(0).normal(0, 80, imgs.shape), 0, 255).astype(np.uint8)
    r, lat = score_images(cfg, state, np.concatenate([imgs, noisy]))
    assert r.shape == lat.shape == (32,)
    assert np.all(r >= 0) and np.all(lat >= 0)
    raw = final_score(cfg, r, lat)
    assert raw.shape == (32,)
    # Reconstruction-based components/scores: the noisy copies score higher.
    assert r[16:].mean() > r[:16].mean(), (r[:16].mean(), r[16:].mean())
    if model != "ganomaly":
        # GANomaly's score is the latent distance E1(x) vs E2(G(x)), which separates only
        # after real training; its formula is tested below, its direction is that of an MSE.
        assert raw[16:].mean() > raw[:16].mean(), (raw[:16].mean(), raw[16:].mean())


@pytest.mark.parametrize("model", ["ganomaly", "egbad"])
def test_score_components_equal_their_formulas(model):
    """The specs' components against the formulas written out from the networks' outputs;
    inputs far outside [-1, 1] so the tanh output range is checked too. (Skip-GANomaly scores
    with SAGAN's code path, tested in test_scoring.py; its direction is tested above.)"""
    t = TINY[model]
    cfg = Config(model=model, **t)
    g, d = build_models(cfg)
    x = 3 * jax.random.normal(jax.random.key(3), (4, t["isize"], t["isize"], 3))

    @jax.jit
    def run(x):
        gv = g.init(jax.random.key(1), x, train=False)
        dv = d.init(jax.random.key(2), x, train=False)
        variables = {"g_params": gv["params"], "g_stats": gv["batch_stats"],
                     "d_params": dv["params"], "d_stats": dv["batch_stats"]}
        got = methods.get(cfg.model).components(cfg, variables, x, False)
        out = g.apply(gv, x, train=False)
        if model == "skip_ganomaly":
            rec, extra = out, None
            fr, ff = d.apply(dv, x, train=False)[1], d.apply(dv, rec, train=False)[1]
        elif model == "ganomaly":
            rec, li, lo = out
            fr, ff = li, lo
        else:
            rec, z = out
            fr, ff = d.apply(dv, x, z, train=False)[1], d.apply(dv, rec, z, train=False)[1]
        return got, (rec, fr, ff)

    (r, lat, recon), (rec, fr, ff) = jax.device_get(run(x))
    x = np.asarray(x)
    if model == "egbad":
        want_r = np.abs(x - rec).mean(axis=(1, 2, 3))
        want_l = np.abs(fr - ff).reshape(4, -1).mean(axis=1)
    else:
        want_r = ((x - rec) ** 2).mean(axis=(1, 2, 3))
        want_l = ((fr - ff) ** 2).reshape(4, -1).mean(axis=1)
    assert np.abs(rec).max() <= 1.0  # tanh output
    np.testing.assert_allclose(recon, rec, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, want_r, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lat, want_l, rtol=1e-4, atol=1e-9)
    assert r.shape == lat.shape == (4,)


def test_final_score_per_model():
    r, lat = np.array([0.1, 0.5, 0.2]), np.array([3.0, 1.0, 2.0])
    for model in ("sagan", "skip_ganomaly", "egbad"):
        cfg = Config(model=model, isize=32, score_lambda=0.9)
        np.testing.assert_allclose(final_score(cfg, r, lat), 0.9 * r + 0.1 * lat)
    np.testing.assert_allclose(final_score(Config(model="ganomaly"), r, lat), lat)


def test_model_flags_validated():
    with pytest.raises(ConfigError, match="skip_ganomaly, ganomaly, egbad"):
        Config(model="anogan")
    with pytest.raises(ConfigError, match="too small for --model=skip_ganomaly"):
        Config(model="skip_ganomaly", isize=16)
    with pytest.raises(ConfigError, match="power of two"):
        Config(model="ganomaly", isize=48)
    Config(model="ganomaly", ngf=8)  # the CBAM width rule is SAGAN's only


# ---- experiments/table2*.py ------------------------------------------------------------------
def test_table2_configs_follow_model_flagfiles():
    from experiments.results import table2_record, table2_runner as t2
    args = t2.parse_args(["--dataset=digits", "--classes=3", "--budget=tiny", "--out=/tmp/x",
                          "--set", "epochs=2"])
    skip = t2.run_config(args, "skip_ganomaly", "3", 0)
    assert (skip.model, skip.w_con, skip.score_lambda, skip.lr) == ("skip_ganomaly", 50.0, 0.9, 2e-4)
    assert (skip.epochs, skip.max_train_images, skip.ngf) == (2, 1000, 16)
    sagan = t2.run_config(args, "sagan", "3", 0)
    assert (sagan.w_con, sagan.score_lambda, sagan.lr) == (40.0, 0.2, 2e-3)
    # the run axis: a model's runs train as one program in OUT/runs/<model>, each run in
    # runs/<class>_seed<seed> below it (the earlier layout <class>/seed<seed> is still read)
    assert sagan.workdir == os.path.join("/tmp/x", "runs", "sagan", "runs", "3_seed0")
    assert table2_record.legacy_workdir("/tmp/x", "sagan", "3", 0) == os.path.join(
        "/tmp/x", "runs", "sagan", "3", "seed0")
    program = t2.program_config(args, "sagan", ["3", "5"], [0, 1])
    assert (program.abnormal_classes, program.seeds) == ("3,5", "0,1")
    assert program.workdir == os.path.join("/tmp/x", "runs", "sagan")
    assert t2.program_config(args, "sagan", ["3"], [0]) == sagan  # a lone run: its own Config


def test_table2_markdown_layout():
    from experiments.results import table2_report as t2
    rows = [dict(model="sagan", abnormal_class=c, seed=s, auc_last_epoch=a,
                 auc_best_epoch_test_selected=a + 0.01)
            for c, s, a in (("bird", 0, 0.6), ("bird", 1, 0.7), ("airplane", 0, 0.5))]
    md = t2.markdown_table(rows, ["bird", "airplane"], ["sagan"]).splitlines()
    assert md[0] == "| Model | bird | airplane | Average |"
    assert md[2] == "| SAGAN (proposed), paper | 0.957 | – | 0.957 |"
    assert md[3].startswith("| SAGAN (proposed), ours, last epoch | 0.650 ± 0.071 | 0.500 | 0.575")
    assert "best epoch (test-selected)" in md[4]
