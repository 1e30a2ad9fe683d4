"""--dsc_impl=auto with --dsc_autotune: per-layer timing, the on-disk cache, the fallbacks."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.methods import build_models, dsc_autotune
from sagan_jax.models.layers import auto_dsc_impl

TINY = dict(ngf=16, ndf=8, nz=10, isize=16, batch_size=4, dsc_autotune=True)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache file and a clean in-process memo."""
    monkeypatch.setenv(dsc_autotune.CACHE_ENV, str(tmp_path / "autotune.json"))
    monkeypatch.delenv(dsc_autotune.ENABLE_ENV, raising=False)
    dsc_autotune.clear_memo()
    yield
    dsc_autotune.clear_memo()


class FakeTimer:
    """Returns fixed times (fastest: ``winner``) and counts the layer shapes it was asked."""

    def __init__(self, winner="shift"):
        self.winner, self.calls = winner, []

    def __call__(self, layer, batch, dtype, candidates, reps=3):
        self.calls.append((layer, batch, dtype, tuple(candidates)))
        return {c: (0.001 if c == self.winner else 0.01) for c in candidates}


def _unique_shapes(cfg):
    return {(l.h, l.w, l.cin, l.cout, l.m, l.input_grad) for l in dsc_autotune.dsc_layers(cfg)}


def test_dsc_layers_lists_every_generator_dsc_with_its_input_shape():
    layers = dsc_autotune.dsc_layers(Config(**TINY))
    names = [l.name for l in layers]
    assert len(layers) == 18 and names[0] == "inc.conv1" and names[-1] == "up4.conv2"
    first, up1 = layers[0], dict((l.name, l) for l in layers)["up1.conv1"]
    assert (first.h, first.cin, first.cout, first.m, first.input_grad) == (16, 3, 16, 2, False)
    assert (up1.h, up1.cin, up1.cout) == (2, 256, 128)  # concat of 8w + 8w at isize/8
    assert dsc_autotune.dsc_layers(Config(**TINY, use_dsc=False)) == ()


def test_cache_is_written_keyed_and_reused(tmp_path):
    cfg = Config(**TINY)
    timer = FakeTimer("shift")
    mapping = dsc_autotune.resolve_dsc_impls(cfg, timer=timer)
    # One timing per distinct layer shape, at the per-device batch, in the compute dtype.
    assert len(timer.calls) == len(_unique_shapes(cfg))
    assert {c[1] for c in timer.calls} == {4} and {c[2] for c in timer.calls} == {"float32"}
    assert dict(mapping) == {l.name: "shift" for l in dsc_autotune.dsc_layers(cfg)}
    entries = json.loads((tmp_path / "autotune.json").read_text())["entries"]
    assert len(entries) == len(timer.calls)
    key = next(iter(entries))
    for part in ("cpu", "float32", "|b4|", "|m2|", jax.__version__):
        assert part in key, (part, key)
    assert entries[key]["impl"] == "shift" and set(entries[key]["ms"]) == set(timer.calls[0][3])

    # A second build (a new process: memo cleared) reads the file and times nothing.
    dsc_autotune.clear_memo()
    again = FakeTimer("dense")
    assert dsc_autotune.resolve_dsc_impls(cfg, timer=again) == mapping
    assert again.calls == []

    # The key holds batch, kernels_per_layer and dtype: changing any of them re-times.
    for changed in (dict(batch_size=8), dict(kernels_per_layer=1),
                    dict(compute_dtype="bfloat16")):
        t = FakeTimer("shift")
        dsc_autotune.resolve_dsc_impls(cfg.replace(**changed), timer=t)
        assert len(t.calls) == len(_unique_shapes(cfg)), changed
    assert {c[2] for c in t.calls} == {"bfloat16"}


def test_forced_choice_is_honoured_by_the_built_model():
    cfg = Config(**TINY)
    mapping = dsc_autotune.resolve_dsc_impls(cfg, timer=FakeTimer("shift_vjp"))
    assert {impl for _, impl in mapping} == {"shift_vjp"}
    g, _ = build_models(cfg)  # build reads the mapping this process resolved
    assert g.dsc_impls == mapping
    # Same parameters, same function as another impl.
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    v = g.init(jax.random.key(1), x, train=False)
    ref, _ = build_models(cfg.replace(dsc_impl="dense"))
    np.testing.assert_allclose(np.asarray(g.apply(v, x, train=False)),
                               np.asarray(ref.apply(v, x, train=False)), atol=2e-5)


def test_autotune_off_gives_the_fixed_rule(monkeypatch):
    cfg = Config(**dict(TINY, dsc_autotune=False))
    timer = FakeTimer("xla")
    mapping = dsc_autotune.resolve_dsc_impls(cfg, timer=timer)
    assert timer.calls == []
    table = dsc_autotune.fixed_table()
    rule = {l.name: table.get(dsc_autotune.table_key(l, "cpu", 1))
            or auto_dsc_impl(l.cin, l.m, l.cout, l.h, l.w, "cpu")
            for l in dsc_autotune.dsc_layers(cfg)}
    assert dict(mapping) == rule
    assert dsc_autotune.impls_for(cfg) == mapping
    # The environment switch does the same for every config (CI, test suites).
    monkeypatch.setenv(dsc_autotune.ENABLE_ENV, "0")
    dsc_autotune.clear_memo()
    assert dict(dsc_autotune.resolve_dsc_impls(Config(**TINY), timer=timer)) == rule
    assert timer.calls == []


def test_default_is_the_fixed_table_then_the_shape_rule(monkeypatch):
    """No timing by default: a layer listed in the table gets the table's form (keyed by
    backend, device count and shape), every other layer the shape rule."""
    cfg = Config(**dict(TINY, dsc_autotune=False))
    layers = dsc_autotune.dsc_layers(cfg)
    first = layers[1]
    other = next(l for l in layers if dsc_autotune.table_key(l, "cpu", 1)
                 != dsc_autotune.table_key(first, "cpu", 1))
    forced = "shift_vjp" if auto_dsc_impl(first.cin, first.m, first.cout, first.h, first.w,
                                          "cpu") != "shift_vjp" else "dense"
    monkeypatch.setattr(dsc_autotune, "_TABLE",
                        {dsc_autotune.table_key(first, "cpu", 1): forced,
                         dsc_autotune.table_key(other, "cpu", 2): forced, "x": "dense"})
    mapping = dict(dsc_autotune.resolve_dsc_impls(cfg, timer=FakeTimer("xla")))
    assert mapping[first.name] == forced
    assert mapping[other.name] == auto_dsc_impl(other.cin, other.m, other.cout, other.h,
                                                other.w, "cpu")  # listed for 2 devices only
    assert dict(dsc_autotune.impls_for(cfg)) == mapping
    assert Config().dsc_autotune is False


def test_shipped_table_names_only_known_forms():
    with open(dsc_autotune.TABLE_FILE) as f:
        entries = json.load(f)["entries"]
    from sagan_jax.config import DSC_IMPLS

    assert all(e["impl"] in DSC_IMPLS and e["impl"] != "auto" for e in entries.values())
    assert all(k.split("|")[0] in ("cpu", "gpu", "tpu") and k.split("|")[1].startswith("d")
               for k in entries)


def test_non_auto_impl_and_non_cpu_backend(monkeypatch):
    timer = FakeTimer("dense")
    cfg = Config(**TINY, dsc_impl="repeat")
    assert {i for _, i in dsc_autotune.resolve_dsc_impls(cfg, timer=timer)} == {"repeat"}
    assert dsc_autotune.impls_for(cfg) == ()  # the generator's dsc_impl covers every layer
    # On GPU/TPU 'auto' is XLA's grouped convolution until measured; nothing is timed.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    mapping = dsc_autotune.resolve_dsc_impls(Config(**TINY), timer=timer)
    assert {i for _, i in mapping} == {"xla"} and timer.calls == []
    assert auto_dsc_impl(64, 2, 64, 32, 32, backend="gpu") == "xla"
    assert auto_dsc_impl(64, 2, 64, 32, 32, backend="tpu") == "xla"


def test_impls_for_reads_a_complete_cache_without_timing(tmp_path):
    cfg = Config(**TINY)
    assert dsc_autotune.impls_for(cfg) == ()  # nothing cached: the layers apply the rule
    mapping = dsc_autotune.resolve_dsc_impls(cfg, timer=FakeTimer("shift"))
    dsc_autotune.clear_memo()  # a new process (e.g. --mode=eval) with the cache on disk
    assert dsc_autotune.impls_for(cfg) == mapping


def test_cache_path_env_var_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(dsc_autotune.CACHE_ENV, str(tmp_path))
    assert dsc_autotune.cache_path() == str(tmp_path / "dsc_autotune.json")
    assert dsc_autotune.cache_path(str(tmp_path / "x.json")) == str(tmp_path / "x.json")
    monkeypatch.delenv(dsc_autotune.CACHE_ENV)
    assert dsc_autotune.cache_path().endswith("/.cache/sagan_jax/dsc_autotune.json")


def test_real_timer_runs_inside_a_trace_and_picks_a_candidate():
    """The real measurement on a tiny layer, called while another function is being traced
    (as when a model is built inside jit): it runs eagerly and returns a time per candidate."""
    layer = dsc_autotune.DSCLayer("l", 4, 4, 8, 8, 1)
    seen = {}

    @jax.jit
    def traced(x):
        seen.update(dsc_autotune.time_candidates(layer, 2, "float32",
                                                 ("shift", "shift_vjp", "dense"), reps=2))
        return x + 1

    traced(jnp.ones(()))
    assert set(seen) == {"shift", "shift_vjp", "dense"}
    assert all(t > 0 for t in seen.values())


def test_a_resumed_run_keeps_its_forms_and_refuses_other_ones(monkeypatch, tmp_path):
    """The DSC forms are part of what defines a run: on resume the checkpoint's forms are used
    (no timing), and flags that give other forms are refused in one line."""
    from sagan_jax.training import checkpoints
    from sagan_jax.config import ConfigError
    from sagan_jax.training.loop import resolve_dsc_forms
    from sagan_jax.training.runs import Run

    cfg = Config(**dict(TINY, dsc_autotune=False), workdir=str(tmp_path))
    forms = {l.name: "dense" for l in dsc_autotune.dsc_layers(cfg)}
    assert dict(dsc_autotune.resolve_dsc_impls(cfg)) != forms  # the default is not all dense
    dsc_autotune.clear_memo()
    monkeypatch.setattr(checkpoints, "saved_meta", lambda workdir: {"dsc_impls": forms})
    with pytest.raises(ConfigError, match=f"^{tmp_path} was trained with other DSC forms than "
                                          "these flags give .*use a new --workdir$"):
        resolve_dsc_forms([Run("", cfg)], 4)
    assert resolve_dsc_forms([Run("", cfg.replace(dsc_impl="dense"))], 4) == forms
    timed = cfg.replace(dsc_autotune=True)
    monkeypatch.setattr(dsc_autotune, "time_candidates", FakeTimer("shift"))
    assert resolve_dsc_forms([Run("", timed)], 4) == forms  # pinned, not timed again
    assert dsc_autotune.impls_for(timed) == tuple(forms.items())
