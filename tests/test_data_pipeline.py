"""The input arithmetic: seeded exact permutations, dropped remainder, [-1, 1] floats, the
batches the training program gathers on the device, and the scoring batches."""
import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax.data.pipeline import epoch_order, eval_batches, padded_batch_size, to_float_np
from sagan_jax.training.program import device_images


def images(n):
    """Image i holds i in its first two pixels (base 256), so batches reveal their indices."""
    x = np.zeros((n, 4, 4, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) % 256, np.arange(n) // 256
    return x


def indices(batch):
    u8 = np.round((batch + 1.0) / 2.0 * 255.0).astype(int)
    return u8[:, 0, 0, 0] + 256 * u8[:, 0, 1, 0]


def epoch(x, bs, seed, ep):
    """The batches one epoch trains on, gathered as the training program gathers them: by
    index from the split's uint8 array on the device."""
    on_device = device_images(x, bs)
    return [indices(np.asarray(to_float_np(jnp.take(on_device, idx, axis=0))))
            for idx in epoch_order(len(x), bs, seed, ep)]


def test_epoch_is_a_seeded_permutation_without_remainder():
    x = images(103)
    e0 = epoch(x, 10, seed=3, ep=0)
    assert len(e0) == 10 and all(len(b) == 10 for b in e0)
    flat = np.concatenate(e0)
    assert len(set(flat)) == 100 and flat.max() < 103
    assert [list(b) for b in e0] == [list(b) for b in epoch(x, 10, seed=3, ep=0)]
    assert [list(b) for b in e0] != [list(b) for b in epoch(x, 10, seed=3, ep=1)]
    assert [list(b) for b in e0] != [list(b) for b in epoch(x, 10, seed=4, ep=0)]
    # exactly the permutation seeded by (seed, epoch), as the PyTorch reference replays it
    perm = np.random.default_rng([3, 0]).permutation(103)[:100].reshape(10, 10)
    assert np.array_equal(epoch_order(103, 10, 3, 0), perm)
    assert np.array_equal(np.stack(e0), perm)


def test_values_are_scaled_to_minus_one_one_on_the_host_and_on_the_device():
    x = np.array([[[[0, 128, 255]]]], np.uint8).repeat(4, axis=0)
    host = to_float_np(x)
    assert host.dtype == np.float32 and host.min() == -1.0 and host.max() == 1.0
    # under jit XLA may divide by 255 as a multiplication by its reciprocal: at most 1 ulp
    np.testing.assert_array_max_ulp(np.asarray(jax.jit(to_float_np)(x)), host, maxulp=1)


def test_an_epoch_shorter_than_one_batch_has_no_step():
    assert epoch_order(3, 4, 0, 0).shape == (0, 4)


def test_eval_batches_keep_order_and_last_partial_batch():
    x = images(23)
    batches = list(eval_batches(x, 10))
    assert [len(b) for b in batches] == [10, 10, 3]
    assert list(np.concatenate([indices(b) for b in batches])) == list(range(23))
    assert all(b.dtype == np.float32 for b in batches)
    assert list(eval_batches(x[:0], 10)) == []


def test_scoring_pads_a_short_batch_only_to_the_next_power_of_two():
    assert [padded_batch_size(n, 64) for n in (1, 2, 3, 5, 33, 64, 65, 1000)] == [
        1, 2, 4, 8, 64, 64, 64, 64]
    assert padded_batch_size(5, 4) == 4
