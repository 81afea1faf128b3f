"""Statistics (blocksparse.stats): the hierarchical bootstrap against a plain resampling loop."""
import numpy as np
import pytest

from blocksparse.stats import hierarchical_bootstrap, paired_test


def _naive(x, ref, n_boot, seed):
    """Resample seeds, then images (one draw of images shared by the seeds), with explicit indices."""
    rng = np.random.default_rng(seed)
    s, n = x.shape
    d = x.astype(float) - (0 if ref is None else ref.astype(float))
    stats = []
    for _ in range(n_boot):
        seeds = rng.integers(0, s, s)
        images = rng.integers(0, n, n)
        stats.append(d[np.ix_(seeds, images)].mean())
    return np.quantile(stats, [0.025, 0.975])


def _runs(rng, accs, n):
    return np.stack([rng.random(n) < a for a in accs])


def test_estimate_is_the_mean_over_seeds_and_images():
    rng = np.random.default_rng(0)
    x, ref = _runs(rng, [0.9, 0.8, 0.85], 400), _runs(rng, [0.9, 0.9, 0.9], 400)
    out = hierarchical_bootstrap(x, ref, n_boot=200)
    assert out["estimate"] == pytest.approx(x.mean() - ref.mean())
    assert (out["seeds"], out["n_images"]) == (3, 400)
    assert hierarchical_bootstrap(x, n_boot=200)["estimate"] == pytest.approx(x.mean())


def test_interval_matches_a_plain_resampling_loop():
    rng = np.random.default_rng(1)
    x, ref = _runs(rng, [0.93, 0.90, 0.95], 1000), _runs(rng, [0.93, 0.93, 0.93], 1000)
    lo, hi = _naive(x, ref, 3000, 5)
    out = hierarchical_bootstrap(x, ref, n_boot=3000, seed=7)
    assert out["lo"] == pytest.approx(lo, abs=0.003) and out["hi"] == pytest.approx(hi, abs=0.003)


def test_one_seed_gives_the_paired_image_bootstrap_and_seeds_widen_it():
    rng = np.random.default_rng(2)
    ref = _runs(rng, [0.92], 2000)
    x = _runs(rng, [0.91], 2000)
    one = hierarchical_bootstrap(x, ref, n_boot=4000)
    t = paired_test(ref[0], x[0], n_boot=4000)
    assert one["lo"] == pytest.approx(t["lo"], abs=0.002) and one["hi"] == pytest.approx(t["hi"], abs=0.002)
    spread = np.concatenate([x, _runs(rng, [0.87], 2000), _runs(rng, [0.95], 2000)])
    three = hierarchical_bootstrap(spread, np.repeat(ref, 3, 0), n_boot=4000)
    assert three["hi"] - three["lo"] > 2 * (one["hi"] - one["lo"])


def test_within_is_the_lower_end_against_the_tolerance():
    rng = np.random.default_rng(3)
    ref = _runs(rng, [0.93] * 3, 3000)
    close = ref.copy()
    close[:, :6] = ~close[:, :6]  # a few images flipped: a tiny difference
    assert hierarchical_bootstrap(close, ref, n_boot=500)["within"]
    far = _runs(rng, [0.85] * 3, 3000)
    out = hierarchical_bootstrap(far, ref, n_boot=500)
    assert not out["within"] and out["lo"] < -0.01


@pytest.mark.parametrize("bad, name", [(np.zeros(5, bool), "correct_x"), (np.full((2, 3), 2), "correct_x")])
def test_bad_inputs_name_the_parameter(bad, name):
    with pytest.raises(ValueError, match=name):
        hierarchical_bootstrap(bad)
    with pytest.raises(ValueError, match="correct_ref"):
        hierarchical_bootstrap(np.ones((2, 3), bool), np.ones((3, 3), bool))
