"""The evaluation protocols (pyro_sparsegen.evaluation) on tiny data: each one's sanity (the
noisy floor lies below the clean ceiling, accuracy falls with the noise, a model that returns
its input reproduces the floor exactly, PSNR / SSIM against the clean image), the FID (small on
two halves of held-out images, large on noise, the closed form on Gaussians) and the paired
comparison on known inputs."""

import functools

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import pyro_sparsegen as psg
from pyro_sparsegen import evaluation as ev

SIGMAS = (0.3, 0.5, 0.7)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def digits(split, n):
    """A class-spread subset of scikit-learn's 8x8 digits."""
    return psg.load_data("digits", split).spread_subset(n)


@functools.cache
def pixel_classifier():
    return ev.fit_pixel_classifier(digits("train", 400))


class Identity(nn.Module):
    """A "model" whose code is the image itself: encode flattens, decode reshapes."""

    def __init__(self, image_shape):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.network = lambda z: z.reshape(len(z), *self.image_shape)
        self.calls = []

    def decode(self, z):
        return self.network(z)

    def encoder(self, x):
        self.calls.append((float(x.min()), float(x.max())))
        return x.flatten(1).clone()


# -- noise ------------------------------------------------------------------------------------
def test_noise_is_not_clipped_by_default_and_clipping_clips_the_same_draws():
    clean = digits("test", 60).images().numpy()
    noisy = ev.add_noise(clean, 0.5, seed=3, repeat=1)
    assert noisy.min() < -0.5 and noisy.max() > 1.5  # authors' protocol: no clipping
    assert np.array_equal(noisy, ev.add_noise(clean, 0.5, seed=3, repeat=1))
    assert not np.array_equal(noisy, ev.add_noise(clean, 0.5, seed=3, repeat=2))
    clipped = ev.add_noise(clean, 0.5, seed=3, repeat=1, clip=True)
    assert np.array_equal(clipped, np.clip(noisy, 0, 1))
    assert np.std(noisy - clean) == pytest.approx(0.5, rel=0.05)
    assert np.array_equal(ev.add_noise(clean, 0.0), clean)


# -- denoise, then classify --------------------------------------------------------------------
@pytest.mark.parametrize("clip", [False, True])
def test_floor_below_ceiling_and_falling_with_noise(clip):
    test = digits("test", 200)
    runs = ev.denoise(None, None, test, classifier=pixel_classifier(), sigmas=(0.0,) + SIGMAS,
                      repeats=2, clip=clip, quality=False)
    accuracy = [runs[s].accuracy.mean for s in (0.0,) + SIGMAS]
    assert accuracy[0] > 0.85  # the ceiling: the classifier on clean images
    assert all(a > b for a, b in zip(accuracy, accuracy[1:])), accuracy
    assert runs[0.7].accuracy.correct.shape == (2, 200)


@pytest.mark.parametrize("clip", [False, True])
def test_a_model_returning_its_input_reproduces_the_floor(clip):
    test = digits("test", 120)
    identity = Identity(test.image_shape)
    kwargs = dict(classifier=pixel_classifier(), sigmas=SIGMAS, repeats=2, clip=clip,
                  batch_size=50)
    floor = ev.denoise(None, None, test, **kwargs)
    same = ev.denoise(identity, identity.encoder, test, **kwargs)
    for s in SIGMAS:
        assert np.array_equal(same[s].accuracy.correct, floor[s].accuracy.correct), s
        assert np.array_equal(same[s].psnr, floor[s].psnr)
        assert np.array_equal(same[s].ssim, floor[s].ssim)
    # the encoder saw the noisy images as they are: unclipped unless asked
    low = min(lo for lo, _ in identity.calls)
    assert (low >= 0) if clip else (low < -0.5)


def test_quality_is_measured_against_the_clean_image():
    test = digits("test", 120)
    identity = Identity(test.image_shape)
    runs = ev.denoise(identity, identity.encoder, test, sigmas=SIGMAS, repeats=1)
    for s in SIGMAS:  # the noisy image against the clean one: PSNR = -10 log10(sigma^2)
        assert runs[s].psnr[0] == pytest.approx(-10 * np.log10(s**2), abs=0.3)
        assert runs[s].ssim[0] < 0.8
    clean = test.images().numpy()
    psnr, ssim = ev.image_quality(clean, clean)
    assert np.all(psnr == 100.0) and np.allclose(ssim, 1.0)


def test_denoise_accuracy_of_a_trained_model(tmp_path):
    train, test = digits("train", 200), digits("test", 100)
    config = psg.TrainConfig.from_dict({
        "data": {"spec": "digits"},  # a likelihood scale for 64 pixels: sparse, not collapsed
        "network": {"latent_dim": 6, "hidden": [32], "noise_scale": 0.1},
        "optim": {"epochs": 3, "batch_size": 25}, "device": "cpu"})
    model = psg.train(config, tmp_path, train_data=train, test_data=test, progress=False,
                      figures=False).model.eval()
    encoder = psg.make_inference(model, config)
    kwargs = dict(classifier=pixel_classifier(), sigmas=(0.5,), repeats=2)
    accuracy = ev.denoise_accuracy(model, encoder, train, test, **kwargs)
    again = ev.denoise_accuracy(model, encoder, train, test, **kwargs)
    assert set(accuracy) == {"0.5"} and 0.3 < accuracy["0.5"] <= 1.0 and accuracy == again
    clipped = ev.denoise_accuracy_clipped(model, encoder, train, test, **kwargs)
    assert clipped["0.5"] != accuracy["0.5"]  # another input, another result
    summary = ev.reconstruction_sparsity(model, encoder, test)
    assert summary["latent_dim"] == 6 and 0 <= summary["inactive_fraction"] <= 1
    assert summary["mean_active"] == pytest.approx(6 * (1 - summary["inactive_fraction"]))
    assert np.isfinite(summary["test_mse"]) and "inactive_fraction_inclusion" in summary
    images = ev.sample_images(model, 7, seed=1, sparsify=True)
    assert images.shape == (7, 1, 8, 8) and np.array_equal(
        images, ev.sample_images(model, 7, seed=1, sparsify=True))


# -- reconstruction against sparsity, class overlap --------------------------------------------
class Linear(nn.Module):
    """A model with a fixed linear decoder and a Gaussian prior (no inclusion probability)."""

    def __init__(self, weight):
        super().__init__()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data = weight
        self.network = nn.Sequential(linear, nn.Unflatten(1, (1, 1, weight.shape[0])))

    def decode(self, z):
        return self.network(z)

    def inclusion_probability(self, z):
        raise NotImplementedError


def test_zeroed_mse_and_sparsity_by_hand(float64):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 4, generator=g)
    z = torch.tensor([[0.1, 0.5, -0.3, 0.15], [0.0, -0.05, 1.0, 0.25]])
    images = (z @ weight.T).reshape(2, 1, 1, 5) + 0.01
    zeroed = torch.tensor([[0.0, 0.5, -0.3, 0.0], [0.0, 0.0, 1.0, 0.25]])
    data = psg.ImageData.from_arrays(images.clamp(0, 1).numpy(), np.array([0, 1]))
    x = data.images().double()
    model = Linear(weight)
    codes = ev.dataset_codes(model, lambda batch: z[:len(batch)], data)
    summary = ev.sparsity_summary(codes)
    assert summary["zeroed_mse"] == pytest.approx(((zeroed @ weight.T - x.flatten(1)) ** 2)
                                                  .mean().item(), rel=1e-12)
    assert summary["test_mse"] == pytest.approx(((z @ weight.T - x.flatten(1)) ** 2)
                                                .mean().item(), rel=1e-12)
    assert summary["inactive_fraction"] == 0.5 and summary["mean_active"] == 2.0


def test_class_overlap_follows_the_diagnostics_definition():
    z = np.zeros((6, 4))
    z[:3, 0] = z[3:, 1] = 1.0  # class 0 uses dimension 0, class 1 dimension 1
    z[:, 3] = 0.5  # ... and both use dimension 3
    codes = {"z": z, "active": np.abs(z) > 0.2, "labels": np.array([0, 0, 0, 1, 1, 1])}
    overlap = ev.class_overlap(codes)
    assert overlap["class_jaccard"] == pytest.approx(1 / 3)  # {0, 3} and {1, 3}
    assert overlap["empty_class_sets"] == 0 and overlap["dimensions_used"] == 3
    assert overlap["usage"].sel({"class": 0}).values.tolist() == [1.0, 0.0, 0.0, 1.0]


# -- linear probes ---------------------------------------------------------------------------
def test_label_subset_is_the_data_helper_on_labels():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])  # sorted by class, as split files are
    rows = ev.label_subset(labels, 10, seed=1)
    assert np.bincount(labels[rows], minlength=4).tolist() == [4, 3, 2, 1]
    data = psg.ImageData.from_arrays(np.zeros((100, 2, 2), dtype=np.uint8), labels)
    assert np.array_equal(rows, data.spread_rows(10, seed=1))
    assert np.array_equal(ev.label_subset(labels, 200), np.arange(100))


def test_linear_probe_on_codes_that_hold_the_label():
    g = np.random.default_rng(0)
    train_y, test_y = np.arange(300) % 3, np.arange(60) % 3
    train_z = np.eye(3)[train_y] + 0.1 * g.standard_normal((300, 3))
    test_z = np.eye(3)[test_y] + 0.1 * g.standard_normal((60, 3))
    probe = ev.linear_probe(train_z, train_y, test_z, test_y, label_counts=(30, 1000, None))
    assert set(probe) == {"30", "all"}  # 1000 exceeds the training set
    assert probe["all"].mean == 1.0 and probe["30"].correct.shape == (1, 60)
    noise = ev.linear_probe(g.standard_normal((300, 3)), train_y, test_z, test_y,
                            label_counts=(None,))
    assert noise["all"].mean < 0.6
    # with 30 labels: the class-spread subset of 30 training codes, nothing else
    hard, hard_test = (np.eye(3)[y] + 0.8 * g.standard_normal((300, 3)) for y in (train_y,) * 2)
    few = ev.linear_probe(hard, train_y, hard_test, train_y, label_counts=(30, None))
    rows = ev.label_subset(train_y, 30, seed=0)
    by_hand = ev.fit_logistic(hard[rows], train_y[rows]).predict(hard_test) == train_y
    assert np.array_equal(few["30"].correct[0], by_hand)
    assert not np.array_equal(few["30"].correct, few["all"].correct)


# -- paired comparison ------------------------------------------------------------------------
def test_paired_comparison_on_known_inputs():
    a = np.ones(10, dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    c = ev.paired_comparison(a, b, bootstrap=4000)
    assert (c.mean_a, c.mean_b, c.difference) == (1.0, 0.6, pytest.approx(0.4))
    # d = 1 on four images, 0 on six: sd = sqrt((4 * 0.6^2 + 6 * 0.4^2) / 9)
    assert c.se == pytest.approx(np.sqrt((4 * 0.36 + 6 * 0.16) / 9) / np.sqrt(10))
    assert c.bootstrap_se == pytest.approx(c.se * np.sqrt(9 / 10), rel=0.1)
    assert (c.only_a, c.only_b) == (4, 0) and c.mcnemar_p == pytest.approx(2 * 0.5**4)
    assert c.verdict == "wins" and ev.paired_comparison(b, a).verdict == "loses"
    # repeats: per-image means over the runs, then the paired differences
    runs = ev.paired_comparison(ev.Accuracy(np.stack([a, b])), ev.Accuracy(np.stack([b, b])))
    assert runs.difference == pytest.approx(0.2) and runs.se == pytest.approx(c.se / 2)
    with pytest.raises(ValueError, match="same images"):
        ev.paired_comparison(a, b[:5])


def test_verdict_rule():
    assert ev.verdict(0.80, 0.79, 0.02) == "ties"
    assert ev.verdict(0.79, 0.80, 0.02) == "ties"
    assert ev.verdict(0.75, 0.5, 0.25) == "ties"  # exactly one standard error: still a tie
    assert ev.verdict(0.80, 0.70, 0.02) == "wins"
    assert ev.verdict(0.70, 0.80, 0.02) == "loses"
    assert ev.verdict(None, 0.8, 0.01) is None
    assert ev.mean_sd([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(np.sqrt(0.02)))
    assert ev.mean_sd([0.5]) == (0.5, 0.0) and ev.mean_sd([]) == (None, None)


def test_accuracy_stacks_runs():
    one, two = ev.Accuracy(np.array([1, 0, 1, 1])), ev.Accuracy(np.array([[0, 0, 1, 1]]))
    both = ev.Accuracy.stack([one, two])
    assert both.correct.shape == (2, 4) and both.mean == 0.625
    assert both.per_run.tolist() == [0.75, 0.5] and both.sd == pytest.approx(np.sqrt(0.03125))


# -- FID ------------------------------------------------------------------------------------------
def test_frechet_distance_closed_form_on_gaussians(float64):
    g = np.random.default_rng(0)
    mu1, mu2 = g.standard_normal(4), g.standard_normal(4)
    s1, s2 = g.random(4) + 0.1, g.random(4) + 0.1
    diagonal = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert ev.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(diagonal)
    # covariances that do not commute: tr(C1 + C2 - 2 (C1 C2)^1/2), via scipy's sqrtm
    a, b = g.standard_normal((4, 4)), g.standard_normal((4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    cross = np.real(scipy.linalg.sqrtm(c1 @ c2))
    general = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * cross)
    assert ev.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(general, rel=1e-9)
    assert ev.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    # sample statistics converge to the closed form
    x = g.multivariate_normal(mu1, c1, 200_000)
    y = g.multivariate_normal(mu2, c2, 200_000)
    estimate = ev.frechet_distance(*ev.gaussian_statistics(x), *ev.gaussian_statistics(y))
    assert estimate == pytest.approx(general, rel=0.02)


@functools.cache
def extractor():
    return ev.fit_feature_classifier(digits("train", 600), epochs=10, seed=0)


def test_fid_small_on_two_halves_large_on_noise():
    test = digits("test", 300)
    x = test.images().numpy()
    first = test.spread_rows(150)
    second = np.setdiff1d(np.arange(300), first)
    assert extractor().accuracy(x, test.labels) > 0.85  # the features know the digits
    halves = ev.fid(extractor(), x[first], x[second])
    noise = ev.fid(extractor(), x[first], np.random.default_rng(0).random(x[second].shape))
    one_class = ev.fid(extractor(), x[first], x[test.labels == 0])
    assert halves < 0.1 * noise and halves < 0.5 * one_class, (halves, one_class, noise)


def test_feature_classifier_is_seeded_and_sample_fid_runs():
    data = digits("train", 200)
    a = ev.fit_feature_classifier(data, epochs=2, seed=4)
    b = ev.fit_feature_classifier(data, epochs=2, seed=4)
    x = digits("test", 60).images().numpy()
    assert np.array_equal(a.features(x), b.features(x)) and a.features(x).shape == (60, 64)
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,)),
                                schedule=psg.schedules.constant(0.3, 1.0, 0.05))
    state = torch.get_rng_state()
    value = ev.sample_fid(model, a, x, seed=2)
    assert np.isfinite(value) and value == ev.sample_fid(model, a, x, seed=2)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone


def test_sparsified_samples_decode_codes_with_exact_zeros():
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,)),
                                schedule=psg.schedules.constant(0.3, 1.0, 0.05))
    with ev.adapters.seeded(5):
        _, z = model.generate(50)
    mask = model.inclusion_probability(z) >= 0.5
    expected = ev.decode(model, z * mask).numpy()
    assert np.allclose(ev.sample_images(model, 50, seed=5, sparsify=True), expected)
    assert not np.allclose(ev.sample_images(model, 50, seed=5), expected)


# -- the command line follows the same noise protocol ------------------------------------------
def test_cli_reconstruct_noise_is_unclipped_unless_asked(tmp_path, monkeypatch):
    from pyro_sparsegen import cli, figures

    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run), "--data", "digits", "--epochs", "1",
                     "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
                     "--batch-size", "200", "--quiet", "--device", "cpu"]) == 0
    seen, original = [], figures.reconstructions

    def spy(model, encoder, x, **kwargs):
        seen.append(kwargs["observed"])
        return original(model, encoder, x, **kwargs)

    monkeypatch.setattr(figures, "reconstructions", spy)
    for extra in ([], ["--clip"]):
        assert cli.main(["reconstruct", str(run), "--noise", "0.5", "--num", "8", "--out",
                         str(tmp_path / "r.png"), "--device", "cpu", *extra]) == 0
    unclipped, clipped = seen
    assert unclipped.min() < -0.3 and unclipped.max() > 1.3
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert torch.equal(clipped, unclipped.clamp(0, 1))  # the same draws, clipped


# -- the labelled variant: inference under a censored likelihood --------------------------------
def test_censored_normal_log_prob_by_hand(float64):
    loc = torch.tensor([[0.2, 0.5, 0.9]])
    value = torch.tensor([[0.0, 0.4, 1.0]])
    d = ev.CensoredNormal(loc, 0.3, event_dim=1)
    normal = torch.distributions.Normal(loc, 0.3)
    expected = (torch.log(normal.cdf(torch.tensor(0.0)))[0, 0]
                + normal.log_prob(value)[0, 1]
                + torch.log(1 - normal.cdf(torch.tensor(1.0)))[0, 2])
    assert d.log_prob(value).item() == pytest.approx(expected.item(), rel=1e-12)
    assert d.batch_shape == (1,) and d.event_shape == (3,)
    draws = ev.CensoredNormal(loc.expand(20000, 3), 0.3).sample()
    assert draws.min() == 0.0 and draws.max() == 1.0  # clipped draws land on the bounds
    assert (draws[:, 0] == 0).double().mean().item() == pytest.approx(
        normal.cdf(torch.tensor(0.0))[0, 0].item(), abs=0.02)


def test_censored_model_infers_against_the_clipping():
    torch.manual_seed(0)
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,)),
                                schedule=psg.schedules.constant(0.9, 1.0, 0.5))
    clipped = ev.censored(model)
    x = torch.rand(5, 1, 8, 8)
    x[:, :, :4] = 0.0  # pixels at the bound
    z = torch.randn(5, 4)
    expected = ev.CensoredNormal(model.network(z), model.noise_scale, event_dim=3).log_prob(x)
    assert torch.allclose(clipped.likelihood(z).log_prob(x), expected)
    assert type(model).likelihood is psg.SparseGenerator.likelihood  # the original is intact
    config = psg.TrainConfig.from_dict({"network": {"latent_dim": 4},
                                        "langevin": {"sparsify": False, "step_size": 0.3}})
    a = psg.make_inference(clipped, config)(x)
    b = psg.make_inference(model, config)(x)
    assert not torch.allclose(a, b)  # the kernel sees the censored likelihood
    import pyro.poutine as poutine

    site = poutine.trace(clipped).get_trace(x).nodes["x"]
    assert isinstance(site["fn"], ev.CensoredNormal)
    with pytest.raises(ValueError, match="ABP model"):
        ev.censored(psg.baselines.BetaVAE(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,))))


def test_the_earlier_names_are_aliases_of_the_new_ones():
    assert ev.encode is ev.images_to_codes
    assert ev.encode_codes is ev.dataset_codes
    assert ev.THRESHOLD == psg.distributions.ACTIVE_THRESHOLD


def test_inclusion_decisions_are_trainings():
    # an inclusion probability of exactly 0.5 is included, as training's masks decide
    codes = {"active": np.ones((1, 4), dtype=bool), "mse": np.zeros(1),
             "zeroed_mse": np.zeros(1),
             "inclusion_probability": np.array([[0.5, 0.49, 0.9, 0.1]])}
    assert ev.sparsity_summary(codes)["inactive_fraction_inclusion"] == 0.5


# -- the labelled variant: Bayes denoising (tempered exact sampler) ------------------------------
class LinearNet(nn.Module):
    """``z -> W z + b`` as an image ``[1, 2, 2]``: with the dense prior a linear-Gaussian
    model, whose posterior is known in closed form."""

    def __init__(self, weight, bias):
        super().__init__()
        self.latent_dim, self.image_shape = weight.shape[1], (1, 2, 2)
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        self.linear.weight.data, self.linear.bias.data = weight.clone(), bias.clone()

    def forward(self, z):
        return self.linear(z).reshape(*z.shape[:-1], *self.image_shape)


def test_noise_inflated_likelihood_scale_is_the_closed_form(float64):
    import pyro.poutine as poutine

    torch.manual_seed(0)
    model = psg.SparseGenerator(psg.MLPGenerator(3, (1, 4, 4), hidden=(8,)),
                                schedule=psg.schedules.constant(0.5), noise_scale=0.3)
    inflated = ev.noise_inflated(model, 0.5)
    z, x = torch.randn(6, 3), torch.randn(6, 1, 4, 4)
    expected = torch.distributions.Normal(model.decode(z), (0.3**2 + 0.5**2) ** 0.5).log_prob(
        x).sum((-3, -2, -1))
    assert torch.allclose(inflated.likelihood(z).log_prob(x), expected, rtol=1e-12)
    site = poutine.trace(poutine.condition(inflated, data={"z": z})).get_trace(x).nodes["x"]
    assert torch.allclose(site["fn"].log_prob(x), expected, rtol=1e-12)  # what the kernel sees
    assert model.noise_scale == 0.3  # the original is intact
    assert ev.noise_inflated(model, 0.0).noise_scale == 0.3


@pytest.mark.parametrize("make", [
    lambda: Identity((1, 2, 2)),
    lambda: psg.baselines.BetaVAE(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,))),
    lambda: psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(16,)),
                                likelihood="bernoulli")])
def test_bayes_denoising_refuses_other_models_in_one_line(make):
    with pytest.raises(ValueError, match="ABP model with a normal likelihood") as info:
        ev.bayes_denoise(make(), np.zeros((2, 1, 8, 8), np.float32), 0.5)
    assert "\n" not in str(info.value)


class SoftmaxClassifier:
    """Two classes, probabilities ``softmax(8 (mean pixel - 0.5), 0)``: far from linear."""

    classes = np.array([3, 7])

    def logits(self, images):
        mean = np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(1)
        return np.stack([8.0 * (mean - 0.5), np.zeros_like(mean)], 1)

    def probabilities(self, images):
        logits = self.logits(images)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def test_predictive_probabilities_average_probabilities_over_the_draws():
    rng = np.random.default_rng(0)
    draws = rng.uniform(0, 1, (5, 3, 1, 2, 2))
    fake = SoftmaxClassifier()
    out = ev.predictive_probabilities(fake, draws)
    expected = np.mean([fake.probabilities(d) for d in draws], 0)
    assert np.allclose(out, expected, rtol=1e-12)
    averaged_logits = fake.logits(draws.reshape(15, 1, 2, 2)).reshape(5, 3, 2).mean(0)
    e = np.exp(averaged_logits)
    assert not np.allclose(out, e / e.sum(1, keepdims=True), atol=1e-3)  # not the same thing
    draws[0, 1, 0, 0, 0] = np.nan  # a non-finite draw is left out, an image without any: NaN
    draws[:, 2, 0, 1, 1] = np.inf
    out = ev.predictive_probabilities(fake, draws)
    assert np.allclose(out[1], np.mean([fake.probabilities(d[1:2]) for d in draws[1:]], 0))
    assert np.allclose(out[0], expected[0]) and np.isnan(out[2]).all()


def test_bayes_denoising_of_a_linear_gaussian_model_has_the_exact_posterior_mean(float64):
    weight = torch.tensor([[0.5, -0.3, 0.2], [0.1, 0.4, -0.5], [-0.4, 0.2, 0.3],
                           [0.3, 0.3, 0.3]])
    bias = torch.tensor([0.5, 0.4, 0.6, 0.5])
    model = psg.SparseGenerator(LinearNet(weight, bias), noise_scale=0.5)  # N(0, 1) prior
    noisy = np.array([[0.9, 0.1, 1.2, 0.3], [0.2, 0.8, -0.1, 1.0],
                      [0.5, 0.5, 0.5, 0.5]]).reshape(3, 1, 2, 2)
    sigma = 0.4
    t2 = 0.5**2 + sigma**2
    w, y = weight.numpy(), noisy.reshape(3, 4) - bias.numpy()
    cov = np.linalg.inv(np.eye(3) + w.T @ w / t2)
    exact = (y @ w @ cov.T / t2) @ w.T + bias.numpy()  # E[W z + b | y]
    sd = np.sqrt(np.diag(w @ cov @ w.T))  # posterior sd of each pixel's mean image
    result = ev.bayes_denoise(model, noisy, sigma, classifier=SoftmaxClassifier(), levels=3,
                              chains=4, warmup=200, draws=250, thin=1, seed=1)
    assert result.scale == pytest.approx(t2**0.5)
    assert result.max_rhat < 1.05 and result.min_ess > 100
    assert (result.finite_draws == 1000).all() and result.nonfinite_images == 0
    mcse = sd / np.sqrt(result.ess[:, None])
    error = np.abs(result.mean_image.reshape(3, 4) - exact)
    assert (error < 4 * mcse).all(), (error / mcse).max()
    assert result.probabilities.shape == (3, 2)
    assert np.allclose(result.probabilities.sum(1), 1)
    assert result.seconds_per_image > 0 and result.swap_accept_prob.shape == (2, 3)
