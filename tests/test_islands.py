"""Islands: projections, stable colours and island metrics on small synthetic grids with known clusters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import special_ortho_group
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_info

from apm.errors import InputError
from apm.islands import (
    IslandConfig,
    Projection,
    ProjectionConfig,
    align_embedding,
    embedding_to_colours,
    island_metrics,
    pca_colours,
    project,
    whole_to_part,
)

D = 32  # feature width of the synthetic grids (small keeps tests fast)
FAST = ProjectionConfig(early_exaggeration_iters=50, full_iters=100, warm_iters=10)  # enough for 64-144 points


def voronoi_labels(h: int, w: int, k: int, seed: int = 0) -> np.ndarray:
    """(h, w) labels of k convex (hence connected) regions."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (k, 2)) * [h, w]
    ii, jj = np.mgrid[:h, :w]
    d2 = (ii[..., None] - centres[:, 0]) ** 2 + (jj[..., None] - centres[:, 1]) ** 2
    return np.argmin(d2, axis=-1)


def grid_from_labels(labels: np.ndarray, noise: float = 0.2, seed: int = 0, d: int = D) -> np.ndarray:
    """Features: one random direction per label plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, d))
    return (centres[labels] + noise * rng.normal(size=labels.shape + (d,))).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    labels = voronoi_labels(12, 12, 5)
    return grid_from_labels(labels), labels


# metrics

def test_island_count_and_ari_match_known_clusters(clustered):
    grid, truth = clustered
    m = island_metrics(grid)
    assert m.n_islands == len(np.unique(truth))
    assert m.n_connected == len(np.unique(truth))  # Voronoi regions are connected
    assert adjusted_rand_score(truth.ravel(), m.labels.ravel()) > 0.99
    assert m.labels.shape == (12, 12) and m.labels.dtype == np.int32
    assert m.labels[0, 0] == 0  # canonical numbering: raster order of first appearance
    assert m.fidelity is None and m.fidelity_map is None
    assert 0.8 < m.agreement <= 1.0  # most neighbour pairs lie inside one island


def test_connected_islands_split_a_cluster_in_two_places():
    labels = np.zeros((8, 9), dtype=int)
    labels[:, 3:6] = 1  # cluster 0 on both sides of a band of cluster 1
    m = island_metrics(grid_from_labels(labels))
    assert (m.n_islands, m.n_connected) == (2, 3)
    assert np.array_equal(m.connected_labels[:, 0], np.zeros(8)) and m.connected_labels[0, 8] == 2


def test_diagonal_touch_counts_as_one_island_only_with_8_connectivity():
    labels = np.zeros((6, 6), dtype=int)
    labels[1:3, 1:3] = 1
    labels[3:5, 3:5] = 1  # two squares of 1s touching at a corner, in a sea of 0s
    grid = grid_from_labels(labels)
    assert island_metrics(grid, config=IslandConfig(connectivity=4)).n_connected == 3
    assert island_metrics(grid, config=IslandConfig(connectivity=8)).n_connected == 2


def test_min_size_ignores_specks():
    labels = np.zeros((8, 8), dtype=int)
    labels[2, 2] = 1  # a one-location speck
    grid = grid_from_labels(labels)
    assert island_metrics(grid).n_islands == 2
    m = island_metrics(grid, config=IslandConfig(min_size=2))
    assert (m.n_islands, m.n_connected) == (1, 1)


def test_metrics_are_scale_free(clustered):
    grid, _ = clustered
    a, b = island_metrics(grid), island_metrics(grid * 1000.0)
    assert np.array_equal(a.labels, b.labels)
    assert a.agreement == pytest.approx(b.agreement, abs=1e-5)


def test_fidelity_map_against_teacher(clustered):
    grid, _ = clustered
    same = island_metrics(grid, teacher=3.0 * grid)
    assert same.fidelity == pytest.approx(1.0, abs=1e-5)
    assert same.fidelity_map.shape == (12, 12) and same.fidelity_map.dtype == np.float32
    worse = grid.copy()
    worse[:4] = -worse[:4]  # the top third points the wrong way
    m = island_metrics(worse, teacher=grid)
    assert np.allclose(m.fidelity_map[:4], -1.0, atol=1e-5) and np.allclose(m.fidelity_map[4:], 1.0, atol=1e-5)
    assert m.fidelity == pytest.approx(1.0 / 3.0, abs=1e-4)
    with pytest.raises(InputError, match="teacher"):
        island_metrics(grid, teacher=grid[:6])


def test_agreement_is_low_for_noise_and_one_for_constant():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(10, 10, 64)).astype(np.float32)
    assert abs(island_metrics(noise).agreement) < 0.1
    m = island_metrics(np.ones((5, 7, 16), np.float32))
    assert (m.n_islands, m.n_connected, m.agreement) == (1, 1, pytest.approx(1.0))
    assert m.agreement_map.shape == (5, 7)


def test_degenerate_grids_give_sensible_metrics():
    zeros = island_metrics(np.zeros((4, 4, 8)))
    assert (zeros.n_islands, zeros.n_connected) == (1, 1)
    one = island_metrics(np.ones((1, 1, 8)), teacher=np.ones((1, 1, 8)))
    assert (one.n_islands, one.n_connected, one.agreement, one.fidelity) == (1, 1, 1.0, pytest.approx(1.0))
    assert one.labels.shape == (1, 1)


def test_whole_to_part_curve_rises_from_one_to_the_parts():
    labels = voronoi_labels(10, 10, 4, seed=3)
    parts = grid_from_labels(labels, noise=0.0)
    rng = np.random.default_rng(1)
    whole = rng.normal(size=D)
    grids = [whole + a * parts + 0.05 * rng.normal(size=parts.shape) for a in (0.0, 0.2, 1.0, 4.0)]
    curve = whole_to_part(grids, steps=[0, 10, 20, 30])
    assert list(curve.steps) == [0, 10, 20, 30]
    assert curve.n_islands[0] == 1 and curve.n_islands[-1] == 4
    assert np.all(np.diff(curve.n_islands) >= 0)
    assert list(whole_to_part(grids[:2]).steps) == [0, 1]
    with pytest.raises(InputError, match="steps"):
        whole_to_part(grids, steps=[1, 2])


# projections

@pytest.mark.parametrize("method", ["tsne", "pca"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_projection_shapes(method, dim, clustered):
    grid, _ = clustered
    p = project(grid, ProjectionConfig(method=method, dim=dim, early_exaggeration_iters=50, full_iters=100))
    assert isinstance(p, Projection)
    assert p.embedding.shape == (144, dim) and p.embedding.dtype == np.float32
    assert p.colours.shape == (144, 3) and p.colours.dtype == np.float32
    assert p.image.shape == (12, 12, 3) and p.image.dtype == np.float32
    assert np.array_equal(p.image.reshape(-1, 3), p.colours)
    assert 0.0 <= p.colours.min() and p.colours.max() <= 1.0
    assert p.grid_shape == (12, 12) and p.dim == dim and p.method == method
    assert not p.embedding.flags.writeable  # shared between frames
    assert (p.kl_divergence is not None) == (method == "tsne")


def test_tsne_separates_known_clusters(clustered):
    grid, truth = clustered
    p = project(grid, FAST)
    colours = p.image.reshape(-1, 3)
    t = truth.ravel()
    means = np.array([colours[t == c].mean(axis=0) for c in np.unique(t)])  # (k, 3)
    within = np.mean([np.linalg.norm(colours[t == c] - means[c], axis=1).mean() for c in np.unique(t)])
    between = np.min([np.linalg.norm(means[a] - means[b]) for a in range(len(means)) for b in range(a)])
    assert within < between / 2  # each island has its own colour


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_warm_start_is_deterministic_and_follows_the_previous_frame(clustered, dim):
    grid, _ = clustered
    config = ProjectionConfig(dim=dim, early_exaggeration_iters=50, full_iters=100, warm_iters=10)
    first = project(grid, config)
    assert not first.warm and not first.aligned and first.n_iter == 150
    rng = np.random.default_rng(1)
    nudged = grid + 0.05 * rng.normal(size=grid.shape).astype(np.float32)
    a = project(nudged, config, previous=first)
    b = project(nudged, config, previous=first)
    assert a.warm and a.aligned and a.n_iter == config.warm_iters
    assert np.array_equal(a.embedding, b.embedding) and np.array_equal(a.colours, b.colours)
    assert np.array_equal(project(grid, config).embedding, first.embedding)  # full fits too
    # a small change in features moves colours little
    assert np.abs(a.colours - first.colours).mean() < 0.05


def test_full_fit_with_previous_keeps_colours_aligned(clustered):
    grid, _ = clustered
    first = project(grid, FAST)
    refit = project(grid, FAST, previous=first, full_fit=True)
    assert not refit.warm and refit.aligned
    assert np.allclose(refit.embedding, first.embedding, atol=1e-4)  # same fit, so alignment is the identity
    assert np.allclose(refit.colours, first.colours, atol=1e-4)


def test_previous_of_another_grid_is_ignored(clustered):
    grid, _ = clustered
    other = project(grid[:6], FAST)
    p = project(grid, FAST, previous=other)
    assert not p.warm and not p.aligned
    fast_3d = ProjectionConfig(dim=3, early_exaggeration_iters=50, full_iters=100)
    p2 = project(grid, fast_3d, previous=project(grid, FAST))
    assert not p2.warm and not p2.aligned  # a 2D frame cannot seed a 3D one


def test_pca_frames_align_to_the_previous_frame(clustered):
    grid, _ = clustered
    pca = ProjectionConfig(method="pca", dim=2)
    first = project(grid, pca)
    again = project(-grid, pca, previous=first)  # PCA of negated features flips signs
    assert np.allclose(again.colours, first.colours, atol=1e-4)


def test_perplexity_is_clipped_for_small_grids():
    grid = grid_from_labels(voronoi_labels(3, 3, 2))
    p = project(grid, ProjectionConfig(perplexity=30.0))
    assert p.perplexity == pytest.approx(8 / 3)
    assert p.embedding.shape == (9, 2)


def test_degenerate_projections():
    for features in (np.ones((4, 5, 8)), np.zeros((4, 5, 8)), np.ones((1, 1, 8)), np.ones((1, 3, 8))):
        for dim in (1, 2, 3):
            p = project(features, ProjectionConfig(dim=dim))
            assert p.embedding.shape == (features.shape[0] * features.shape[1], dim)
            assert np.allclose(p.colours, 0.5) and p.n_iter == 0 and p.perplexity is None
    tiny = project(np.arange(6, dtype=np.float32).reshape(1, 3, 2) ** 2)  # 3 points: PCA stands in for t-SNE
    assert tiny.embedding.shape == (3, 2) and tiny.n_iter == 0 and not np.allclose(tiny.colours, 0.5)
    # a constant frame followed by a real one: no warm start from a collapsed embedding
    grid = grid_from_labels(voronoi_labels(4, 5, 2))
    p = project(grid, FAST, previous=project(np.ones((4, 5, 8)), FAST))
    assert not p.warm and np.isfinite(p.embedding).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.array([[[1.0, np.inf]]]), "NaN"),
        (np.ones((4, 4)), "grid"),
        (np.ones((0, 4, 3)), "empty"),
        (np.array([[["a"]]]), "real numbers"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, message):
    with pytest.raises(InputError, match=message):
        project(bad)
    with pytest.raises(InputError, match=message):
        island_metrics(bad)
    with pytest.raises(InputError, match=message):
        pca_colours(bad)


def test_bad_configs_raise_input_errors():
    bad = ({"dim": 4}, {"method": "umap"}, {"perplexity": 0}, {"gradient": "fft", "dim": 3}, {"warm_iters": -1})
    for kwargs in bad:
        with pytest.raises(InputError):
            ProjectionConfig(**kwargs)
    for kwargs in ({"connectivity": 6}, {"distance_threshold": -0.1}, {"min_size": 0}):
        with pytest.raises(InputError):
            IslandConfig(**kwargs)


def test_fft_gradient_in_1d_and_2d(clustered):
    grid, _ = clustered
    for dim in (1, 2):
        p = project(grid, ProjectionConfig(dim=dim, gradient="fft", early_exaggeration_iters=50, full_iters=100))
        assert p.embedding.shape == (144, dim) and np.isfinite(p.embedding).all()


# colours

def test_colours_do_not_flip_under_rotation_reflection_or_axis_permutation():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        emb = rng.normal(size=(100, k)) * np.arange(1, k + 1)  # anisotropic, so the alignment is unique
        reference = embedding_to_colours(emb)
        flips = [-emb]
        if k > 1:
            flips += [emb[:, ::-1], emb @ special_ortho_group.rvs(k, random_state=1) + 5.0]
        for moved in flips:
            assert np.allclose(embedding_to_colours(moved, reference=emb), reference, atol=1e-5)
        if k > 1:  # without the reference the colours do change
            assert not np.allclose(embedding_to_colours(emb[:, ::-1]), reference, atol=0.05)


def test_small_embedding_change_moves_colours_little():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        emb = rng.normal(size=(200, k))
        moved = emb + 0.01 * rng.normal(size=emb.shape)
        diff = np.abs(embedding_to_colours(moved, reference=emb) - embedding_to_colours(emb))
        assert diff.mean() < 0.02


def test_align_embedding_and_colour_edge_cases():
    emb = np.random.default_rng(0).normal(size=(10, 2))
    aligned = align_embedding(emb)
    assert aligned.dtype == np.float32 and np.allclose(aligned.mean(axis=0), 0, atol=1e-6)
    assert np.allclose(embedding_to_colours(np.zeros((5, 2))), 0.5)
    with pytest.raises(InputError):
        embedding_to_colours(np.zeros((5, 4)))
    with pytest.raises(InputError):
        embedding_to_colours(emb, reference=emb[:5])
    with pytest.raises(InputError):
        embedding_to_colours(np.full((3, 2), np.nan))


def test_pca_colours(clustered):
    grid, _ = clustered
    img = pca_colours(grid)
    assert img.shape == (12, 12, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.1
    assert np.allclose(pca_colours(np.ones((3, 3, 4))), 0.5)
    assert pca_colours(np.ones((1, 1, 2))).shape == (1, 1, 3)
    assert pca_colours(grid[..., :2]).shape == (12, 12, 3)  # fewer than three feature dims


def test_blas_runs_on_one_thread_inside_and_the_limit_is_restored(clustered):
    """Inside `one_blas_thread` BLAS runs on one thread; after a projection and the metrics the caller's limit is
    back (set to 2 here: the test suite pins 1, which would make the check pass either way)."""
    from threadpoolctl import threadpool_limits

    from apm.islands import one_blas_thread

    grid, _ = clustered
    blas = lambda: [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]  # noqa: E731
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas()
        assert before and all(n == 2 for n in before)
        with one_blas_thread():
            assert all(n == 1 for n in blas())
        project(grid, ProjectionConfig(method="pca"))
        island_metrics(grid)
        assert blas() == before


def test_perplexity_search_reaches_the_perplexity_on_every_row():
    """Each row of P_{j|i} sums to 1 and has entropy log(perplexity), also where the neighbours' distances are
    nearly equal (high-dimensional noise); where openTSNE's own search converges, the two agree."""
    from openTSNE import _tsne

    from apm.islands import _knn, conditional_affinities, squared_distances

    rng = np.random.default_rng(0)
    for grid in (grid_from_labels(voronoi_labels(16, 16, 6), noise=0.3, d=64),  # parts
                 rng.normal(size=(16, 16, 384)).astype(np.float32)):  # pure noise: distances within a few percent
        idx, dist = _knn(None, 45, squared_distances(grid))
        p = conditional_affinities(dist, 15.0)
        assert p.shape == (256, 45) and np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        entropy = -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=1)
        np.testing.assert_allclose(np.exp(entropy), 15.0, rtol=1e-6)
        ref = np.asarray(_tsne.compute_gaussian_perplexity(np.asarray(dist, dtype=float), np.array([15.0]),
                                                            num_threads=1))
        ref_entropy = -np.sum(ref * np.log(np.maximum(ref, 1e-300)), axis=1)
        converged = np.abs(np.exp(ref_entropy) - 15.0) < 1e-4
        if grid.shape[-1] == 64:  # parts: openTSNE converges on most rows, and there the two agree
            assert converged.sum() > 200
            np.testing.assert_allclose(p[converged], ref[converged], atol=1e-5)
        else:  # noise: openTSNE's search stops short of the perplexity on most rows
            assert converged.sum() < 128


def test_joint_affinities_are_symmetric_and_match_opentsne():
    from openTSNE import affinity
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    from apm.islands import _knn, joint_affinities, squared_distances

    grid = grid_from_labels(voronoi_labels(12, 12, 4), noise=1.0)
    idx, dist = _knn(None, 30, squared_distances(grid))
    joint = joint_affinities(idx, dist, 10.0)
    assert joint.shape == (144, 144) and joint.has_canonical_format
    dense = joint.toarray()
    assert abs(dense.sum() - 1.0) < 1e-12 and np.abs(dense - dense.T).max() < 1e-15 and np.all(np.diag(dense) == 0)
    ref = affinity.PerplexityBasedNN(knn_index=PrecomputedNeighbors(idx, dist), perplexity=10.0).P.toarray()
    np.testing.assert_allclose(dense, ref, atol=1e-6 * ref.max())


def test_shared_distances_change_nothing(clustered):
    """A live frame forms the distances once for the t-SNE and the islands: the same results as without."""
    from apm.islands import squared_distances

    grid, _ = clustered
    x = grid.reshape(-1, D).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    brute = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    shared = squared_distances(grid)
    assert shared.shape == (144, 144) and shared.dtype == np.float32 and np.all(np.isinf(np.diag(shared)))
    off = ~np.eye(144, dtype=bool)
    np.testing.assert_allclose(shared[off], brute[off], atol=1e-5)
    previous = project(grid, FAST)
    changed = grid + 0.05 * np.random.default_rng(1).normal(size=grid.shape).astype(np.float32)
    a = project(changed, FAST, previous)
    b = project(changed, FAST, previous, distances=squared_distances(changed))
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    m1, m2 = island_metrics(changed, grid), island_metrics(changed, grid, distances=squared_distances(changed))
    assert m1.n_islands == m2.n_islands and np.array_equal(m1.labels, m2.labels)
    with pytest.raises(InputError, match="distances must be"):
        project(grid, FAST, distances=np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match="metric must be"):
        squared_distances(grid, "manhattan")


def test_exact_neighbours_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    from apm.islands import _knn

    x = (np.random.default_rng(0).normal(size=(60, 16)) + 3.0).astype(np.float32)
    idx, dist = _knn(x, 9)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=9).fit(x).kneighbors()
    order = np.argsort(dist, axis=1)
    assert np.array_equal(np.take_along_axis(idx, order, axis=1), ref_idx)
    assert np.allclose(np.take_along_axis(dist, order, axis=1), ref_dist, atol=1e-4)


def test_neighbours_come_in_column_order_and_ties_keep_the_lowest_numbered():
    """`_knn` selects by each row's k-th distance: its rows are sorted by column (the CSR order the affinities
    need), and where locations tie at the k-th distance (repeated features) the lowest-numbered are kept."""
    from apm.islands import _knn, squared_distances

    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[10:30] = x[10]  # 20 identical rows: their distances to each other are 0, or within round-off of it
    # and distances that tie exactly on every CPU: small whole numbers, symmetric, inf on the diagonal
    whole = rng.integers(1, 4, size=(50, 50)).astype(np.float32)
    whole = np.minimum(whole, whole.T)
    np.fill_diagonal(whole, np.inf)
    for sq, k in [(sq, k) for sq in (squared_distances(x, "euclidean"), whole) for k in (1, 5, 19, 25, 49)]:
        idx, dist = _knn(None, k, sq)
        assert idx.shape == dist.shape == (50, k)
        assert np.all(np.diff(idx, axis=1) > 0)  # column order, no repeats
        assert not np.any(idx == np.arange(50)[:, None])  # never itself
        reference = np.sort(np.argsort(sq, axis=1, kind="stable")[:, :k], axis=1)  # lowest-numbered among ties
        assert np.array_equal(idx, reference)
        np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(sq, idx, axis=1).astype(np.float64)))


def test_warm_update_skips_only_the_error_evaluation(clustered, monkeypatch):
    """A warm update runs its steps without openTSNE's closing evaluation of the KL divergence (one more gradient,
    which a live frame never shows): the same embedding as with it, one gradient fewer, no KL reported."""
    import apm.islands.projection as projection

    grid, _ = clustered
    first = project(grid, FAST)
    nudged = grid + 0.05 * np.random.default_rng(1).normal(size=grid.shape).astype(np.float32)
    calls = []
    counted = projection.kl_divergence_bh

    def counting(*args, **kwargs):
        calls.append(kwargs.get("should_eval_error"))
        return counted(*args, **kwargs)

    monkeypatch.setattr(projection, "kl_divergence_bh", counting)
    skipped = project(nudged, FAST, previous=first)
    assert skipped.warm and skipped.kl_divergence is None
    assert calls == [False] * FAST.warm_iters  # the steps alone
    calls.clear()
    monkeypatch.setattr(projection, "_no_final_error", lambda objective: objective)  # openTSNE's own ending
    full = project(nudged, FAST, previous=first)
    assert calls == [False] * FAST.warm_iters + [True] and full.kl_divergence is not None
    assert np.array_equal(skipped.embedding, full.embedding)


# pointing and the part-whole tree


def test_agreement_map_is_one_at_the_clicked_location():
    from apm.islands import agreement_map

    rng = np.random.default_rng(0)
    grid = rng.normal(size=(6, 7, 16)).astype(np.float32)
    grid[2:4, 2:5] = grid[2, 2] * 3.0  # an island: the same direction, another length
    sims = agreement_map(grid, (2, 3))
    assert sims.shape == (6, 7) and sims[2, 3] == 1.0 and np.all(np.abs(sims) <= 1.0)
    np.testing.assert_allclose(sims[2:4, 2:5], 1.0, atol=1e-6)  # cosine: scale does not matter
    assert sims[0, 0] < 0.9
    with pytest.raises(InputError, match="outside"):
        agreement_map(grid, (6, 0))


def test_column_agreement_reads_each_level():
    from apm.islands import column_agreement

    rng = np.random.default_rng(1)
    smooth = np.ones((5, 5, 8), np.float32)  # every neighbour agrees
    noisy = rng.normal(size=(5, 5, 8)).astype(np.float32)
    values = column_agreement([smooth, noisy], (2, 2))
    assert values.shape == (2,) and values[0] == pytest.approx(1.0) and values[1] < 0.5


def test_part_whole_tree_partitions_and_nests():
    from apm.islands import part_whole_tree

    rng = np.random.default_rng(2)
    grid = rng.normal(size=(12, 12, 24)).astype(np.float32)
    colours = rng.random((12, 12, 3)).astype(np.float32)
    tree = part_whole_tree(grid, levels=(2, 4, 8), colours=colours)
    by_id = {n.id: n for n in tree.nodes}
    assert tree.at(0)[0].size == 144 and tree.at(0)[0].mask.all()
    for level, k in enumerate((2, 4, 8), start=1):
        nodes = tree.at(level)
        assert len(nodes) == k
        cover = np.sum([n.mask.astype(int) for n in nodes], axis=0)
        assert np.all(cover == 1)  # a partition of the locations
        for node in nodes:
            parent = by_id[node.parent]
            assert parent.level == level - 1 and not np.any(node.mask & ~parent.mask)  # nested
            assert node.size == int(node.mask.sum()) and node.colour is not None
    flat = part_whole_tree(np.ones((4, 4, 3), np.float32))
    assert len(flat.nodes) == 1  # a constant grid is one whole
    with pytest.raises(InputError):
        part_whole_tree(grid, levels=(4, 2))
