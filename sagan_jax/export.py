"""--mode=export: the trained scoring function, portable (docs/export.md).

Writes into WORKDIR/export/:

- ``model.jaxexport``: ``jax.export`` of ``f(images) -> (score, map)``, serialised. ``images``:
  uint8 (B, isize, isize, 3) RGB, B symbolic (any batch size); ``score``: float32 (B,), the
  model's raw anomaly score; ``map``: float32 (B, isize, isize), the ``--anomaly_map`` pixel
  map. The weights are constants inside it, BatchNorm uses its running averages (an image's
  score never depends on its batch). Loading needs jax only: ``jax.export.deserialize``.
- ``model.json``: how to feed it and read it: input size, resize rule, normalisation (done
  inside the function, stated for reference), score weights, the decision threshold and
  normalisation range, the map's colour scale, class names and the versions that wrote it.
- ``saved_model/`` (only with ``--export_savedmodel``): a TensorFlow SavedModel of the same
  function through jax2tf, batch polymorphic, signature ``serving_default``: ``images`` uint8
  (B, isize, isize, 3) -> ``{"score": (B,), "map": (B, isize, isize)}`` float32. Needs
  TensorFlow (the ``tfds`` extra), imported only here; model.json's ``saved_model`` names it.

Scores equal --mode=score's up to float32 rounding: score mode sums the score's terms in
float64 on the host and batches by --eval_batch_size; the export computes in float32 at the
caller's batch size.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp

from sagan_jax import methods
from sagan_jax.config import ConfigError
from sagan_jax.data.base import DataError

log = logging.getLogger("sagan_jax")
MODEL_FILE, META_FILE, SAVED_MODEL_DIR = "model.jaxexport", "model.json", "saved_model"
PLATFORMS = ("cpu", "cuda")
SIGNATURE = "serving_default"


def scoring_function(cfg, variables):
    """``f(images_u8) -> (score, map)`` of one trained model (see the module doc)."""
    spec = methods.get(cfg.model)

    def score_one(x1):
        r, lat, _ = spec.components(cfg, variables, x1[None], False)
        return spec.final_score(cfg, r, lat)[0].astype(jnp.float32)

    def fn(images_u8):
        x = (images_u8.astype(jnp.float32) / 255.0 - 0.5) / 0.5
        r, lat, recon = spec.components(cfg, variables, x, False)
        score = spec.final_score(cfg, r, lat).astype(jnp.float32)
        if cfg.anomaly_map == "grad":
            amap = jnp.abs(jax.vmap(jax.grad(score_one))(x).astype(jnp.float32)).mean(-1)
        else:
            amap = jnp.abs(x - recon.astype(jnp.float32)).mean(-1)
        return score, amap

    return fn


def export_function(cfg, variables):
    """The jax.export.Exported of scoring_function, batch dimension symbolic. Lowered for
    CPU and CUDA when this jax can (one file for both), else for this machine's platform."""
    fn = jax.jit(scoring_function(cfg, variables))
    (b,) = jax.export.symbolic_shape("b")
    arg = jax.ShapeDtypeStruct((b, cfg.isize, cfg.isize, 3), jnp.uint8)
    try:
        return jax.export.export(fn, platforms=PLATFORMS)(arg)
    except Exception as e:  # noqa: BLE001 - a platform this jax cannot lower for
        log.info("export for %s failed (%s); exporting for %s only", ", ".join(PLATFORMS),
                 " ".join(str(e).split())[:200], jax.default_backend())
        return jax.export.export(fn)(arg)


def import_tensorflow():
    """TensorFlow, kept quiet and off the accelerators (they belong to JAX), for
    --export_savedmodel only. ConfigError naming the fix when it does not import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError as e:
        raise ConfigError(
            f"--export_savedmodel writes a TensorFlow SavedModel, and TensorFlow does not "
            f"import here ({e}); install the tfds extra: pip install \".[tfds]\", or drop "
            f"--export_savedmodel (model.jaxexport needs jax only)") from None
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised: devices can no longer change
        pass
    return tf, jax2tf


def write_saved_model(cfg, variables, folder: str, tf, jax2tf) -> dict:
    """``folder``: the SavedModel of scoring_function through jax2tf (batch polymorphic,
    lowered for CPU and CUDA when this jax can, as export_function); model.json's entry."""
    fn = scoring_function(cfg, variables)
    spec = tf.TensorSpec([None, cfg.isize, cfg.isize, 3], tf.uint8, name="images")
    poly = f"(b, {cfg.isize}, {cfg.isize}, 3)"

    def build(platforms):
        converted = jax2tf.convert(fn, polymorphic_shapes=[poly], with_gradient=False,
                                   native_serialization_platforms=platforms)

        @tf.function(input_signature=[spec], autograph=False)
        def serve(images):
            score, amap = converted(images)
            return {"score": tf.identity(score, name="score"), "map": tf.identity(amap, name="map")}

        module = tf.Module()
        module.serve = serve
        serve.get_concrete_function()  # lowers now, so a platform failure shows here
        return module, serve

    try:
        module, serve = build(PLATFORMS)
        platforms = list(PLATFORMS)
    except Exception as e:  # noqa: BLE001 - a platform this jax cannot lower for
        log.info("SavedModel for %s failed (%s); exporting for %s only", ", ".join(PLATFORMS),
                 " ".join(str(e).split())[:200], jax.default_backend())
        module, serve = build(None)
        platforms = [jax.default_backend()]
    tmp = f"{folder}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={SIGNATURE: serve})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return {"path": SAVED_MODEL_DIR, "signature": SIGNATURE,
            "inputs": {"images": f"uint8 (batch, {cfg.isize}, {cfg.isize}, 3), RGB"},
            "outputs": {"score": "float32 (batch,)",
                        "map": f"float32 (batch, {cfg.isize}, {cfg.isize})"},
            "platforms": platforms, "tensorflow": tf.__version__}


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("sagan_jax", "jax", "jaxlib", "flax", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def metadata(cfg, calib, map_scale: float, exported, saved_model=None) -> dict:
    """model.json's content (see the module doc)."""
    spec = methods.get(cfg.model)
    return {
        "format": "sagan_jax export 1",
        "model": cfg.model, "description": spec.description,
        "input": {"shape": ["batch", cfg.isize, cfg.isize, 3], "dtype": "uint8",
                  "channels": "RGB", "isize": cfg.isize, "resize": cfg.resize,
                  "resize_rule": {
                      "crop": "shorter side to isize (bilinear), centre crop",
                      "squash": "both sides to isize (bilinear), aspect ratio lost",
                      "pad": "longer side to isize (bilinear), centred on black"}[cfg.resize]},
        "normalisation": "inside the function: x = (pixel / 255 - 0.5) / 0.5, in [-1, 1]",
        "outputs": {"score": "float32 (batch,): raw anomaly score, higher = more anomalous",
                    "map": f"float32 (batch, {cfg.isize}, {cfg.isize}): the {cfg.anomaly_map} "
                           "anomaly map"},
        "score": {"lambda": cfg.score_lambda, "anomaly_map": cfg.anomaly_map,
                  "rule": "abnormal when score > threshold"},
        "threshold": calib["threshold"],
        "threshold_fpr": calib.get("fpr"), "calibration_source": calib.get("source"),
        "normalise": {"min": calib["min"], "max": calib["max"],
                      "rule": "(score - min) / (max - min)"},
        "map_scale": map_scale,
        "class_names": ["normal", "abnormal"],
        "platforms": list(exported.platforms),
        "calling_convention_version": exported.calling_convention_version,
        "versions": _versions(),
        "saved_model": saved_model,  # None: not written (--export_savedmodel)
    }


def export_detector(det, folder: str) -> dict:
    """Write model.jaxexport and model.json of a sagan_jax.api.Detector into ``folder``, and
    saved_model/ with --export_savedmodel (TensorFlow checked before anything is written)."""
    cfg = det.cfg
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DataError(f"the export folder {folder!r} is a file; pass --output=FOLDER (a new "
                        "or existing folder) for --mode=export")
    tf_modules = import_tensorflow() if cfg.export_savedmodel else None
    exported = export_function(cfg, det.variables)
    os.makedirs(folder, exist_ok=True)
    model_path, meta_path = os.path.join(folder, MODEL_FILE), os.path.join(folder, META_FILE)
    saved_path, saved = os.path.join(folder, SAVED_MODEL_DIR), None
    if tf_modules:
        saved = write_saved_model(cfg, det.variables, saved_path, *tf_modules)
        log.info("exported the TensorFlow SavedModel %s (signature %s, platforms %s)",
                 saved_path, SIGNATURE, ", ".join(saved["platforms"]))
    elif os.path.isdir(saved_path):
        log.warning("%s is from an earlier export, not this one (model.json: saved_model "
                    "null); pass --export_savedmodel to rewrite it", saved_path)
    meta = metadata(cfg, det.calibration, det.map_scale, exported, saved)
    for path, data in ((model_path, bytes(exported.serialize())),
                       (meta_path, (json.dumps(meta, indent=2) + "\n").encode())):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    log.info("exported %s (%d bytes, platforms %s) and %s", model_path,
             os.path.getsize(model_path), ", ".join(exported.platforms), meta_path)
    out = {"model": model_path, "meta": meta_path, "platforms": list(exported.platforms)}
    if saved:
        out["saved_model"] = saved_path
    return out
