"""Every Config field declares its role where it is defined (config.flag), and the flag lists
that other modules keep are derived from those declarations."""
import dataclasses

import pytest

from sagan_jax import config, inference
from sagan_jax.config import ROLES, SCORE_SOURCES, Config, flags_where
from sagan_jax.training import checkpoints


@pytest.mark.parametrize("field", dataclasses.fields(Config), ids=lambda f: f.name)
def test_every_field_declares_a_known_role(field):
    assert field.metadata.get("role") in ROLES, (
        f"Config.{field.name} has no known role; declare one of {', '.join(ROLES)} in flag()")
    assert field.metadata.get("score") in SCORE_SOURCES
    assert isinstance(field.metadata.get("resume"), bool)
    assert field.metadata.get("help")


def test_a_flag_without_a_known_role_is_refused():
    with pytest.raises(TypeError):
        config.flag(0, "no role")  # noqa: the role is a required argument
    with pytest.raises(ValueError, match="unknown role 'speed'"):
        config.flag(0, "a made-up role", "speed")


def test_the_flag_lists_are_derived_from_the_roles():
    assert config.RUN_SPECIFIC == flags_where(role="run_specific")
    assert set(config.RUN_SPECIFIC) == {"seed", "abnormal_class", "abnormal_classes", "seeds",
                                        "workdir"}
    assert checkpoints.MODEL_FLAGS == ("model", "isize", "ngf", "ndf", "nz", "use_dsc",
                                       "use_cbam", "kernels_per_layer")
    assert checkpoints.RESUMABLE_CHANGES == flags_where(resume=True)
    assert set(inference.SCORE_FLAGS) == {"input", "output", "on_bad_image", "on_small_image",
                                          "max_pictures", "export_savedmodel"}
    assert set(inference.RUN_DEFAULT_FLAGS) == {"anomaly_map", "eval_batch_size"}
    # every runtime or scoring flag may change on resume; a network flag never may
    assert not set(checkpoints.MODEL_FLAGS) & set(checkpoints.RESUMABLE_CHANGES)
    assert set(flags_where(role=("runtime", "scoring_io"))) <= set(checkpoints.RESUMABLE_CHANGES)
