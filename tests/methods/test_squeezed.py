import numpy as np
import pytest
import torch
from references import FixedDistanceConfig

from longreach import kernels
from longreach.clustering import ClusterIndex, calibrate_globally, kmeans, tree_kmeans
from longreach.kernels.decode import _take_best, attend_segments
from longreach.methods import squeezed
from longreach.methods.squeezed import SqueezedPolicy
from tiny import prompt_ids, tiny_hf_model, tiny_lm

SMALL_INFLLM = dict(n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)


def _lloyd_by_hand(points, k, iterations, seed):
    """Spherical Lloyd's k-means, one point at a time, from the same initial points."""
    generator = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize(points, dim=-1)
    centroids = unit[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        labels = torch.tensor([max(range(k), key=lambda c: float(x @ centroids[c])) for x in unit])
        for c in range(k):
            if (labels == c).any():
                centroids[c] = torch.nn.functional.normalize(unit[labels == c].mean(0), dim=0)
    return torch.stack([points[labels == c].mean(0) for c in range(k)]), labels


def test_kmeans_matches_lloyd_by_hand():
    points = torch.randn(2, 60, 8) * torch.linspace(0.5, 3, 8)
    centroids, labels = kmeans(points, 5, iterations=6, seed=3)
    for g in range(2):
        expected_centroids, expected_labels = _lloyd_by_hand(points[g], 5, 6, seed=3)
        if g == 0:  # one generator, one draw per group: the first group's initial points match
            assert torch.equal(labels[g], expected_labels)
            torch.testing.assert_close(centroids[g], expected_centroids)
        member_means = torch.stack([points[g][labels[g] == c].mean(0) for c in range(5)])
        torch.testing.assert_close(centroids[g], member_means)  # centroids: means of raw keys


def test_tree_kmeans_is_a_converged_two_level_lloyd_by_brute_force():
    torch.manual_seed(2)
    points = torch.randn(2, 240, 8) * torch.linspace(0.5, 3, 8)
    fine, labels, coarse, parent = tree_kmeans(points, cluster_size=5, coarse_size=4, iterations=100, seed=1)
    unit = torch.nn.functional.normalize(points, dim=-1)

    def direction(members):  # spherical k-means assigns by the normalised mean of unit vectors
        return torch.nn.functional.normalize(members.mean(0), dim=0)

    for g in range(2):
        coarse_of = parent[g, labels[g]]
        # coarse level: a key's coarse cluster is the nearest direction; centroids are raw member means
        directions = torch.stack([direction(unit[g][coarse_of == c]) for c in range(coarse.shape[1])])
        assert torch.equal((unit[g] @ directions.T).argmax(1), coarse_of)
        for c in range(coarse.shape[1]):
            torch.testing.assert_close(coarse[g, c], points[g][coarse_of == c].mean(0))
        # fine level: among its coarse cluster's fine clusters, a key sits with the nearest direction
        used = labels[g].unique()
        for i in range(points.shape[1]):
            siblings = [int(f) for f in used if parent[g, f] == coarse_of[i]]
            scores = [float(unit[g, i] @ direction(unit[g][labels[g] == f])) for f in siblings]
            assert siblings[max(range(len(siblings)), key=scores.__getitem__)] == int(labels[g, i])
        for f in used:
            torch.testing.assert_close(fine[g, f], points[g][labels[g] == f].mean(0))


def _selected_by_hand(index, q, scale, head, budget):
    """Per query: clusters by estimated probability, keys taken in memory order until the budget."""
    rows = []
    counts = index.counts[head]
    for i in range(q.shape[1]):
        logits = (q[:, i] @ index.centroids[head].T) * scale  # [g, k]
        norm = torch.logsumexp(logits + counts.float().log(), -1, keepdim=True)
        estimate = (logits - norm).exp().amax(0)
        chosen = []
        for c in sorted(range(len(counts)), key=lambda c: (-float(estimate[c]), c)):
            members = (index.labels[head] == c).nonzero().squeeze(1).tolist()
            chosen += members[:budget - len(chosen)]
        rows.append(sorted(chosen))
    return rows


@pytest.mark.parametrize("method", ["tree", "flat"])
def test_budget_lookup_matches_brute_force_and_is_exact(method):
    torch.manual_seed(0)
    keys = torch.randn(2, 300, 16)
    index = ClusterIndex.build(keys, cluster_size=8, levels=1, method=method, iterations=5)
    q = torch.randn(2, 5, 16)  # 2 query heads share the KV head
    for head in range(2):
        rows, mask, scored = index.select(q, 0.25, head, budget=37)
        assert scored == index.centroids.shape[1]
        got = [rows[mask[i]].tolist() for i in range(5)]
        assert got == _selected_by_hand(index, q, 0.25, head, 37)
        assert all(len(r) == 37 for r in got)


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("budget", [1, 37, 299, 300, 1000])
def test_decode_lookup_of_every_head_at_once_selects_what_the_per_head_lookup_does(budget, compiled, levels,
                                                                                   monkeypatch):
    """`select_one` (decode: one query, members grouped by cluster; compiled or torch) against
    `select` and (one level) by hand, budgets from one key to more than the context, the last
    cluster taken in part; with two levels, the coarse clusters searched cover 2 budgets, and
    the centroids scored are counted as `select` counts them."""
    _use_kernels(monkeypatch, compiled)
    torch.manual_seed(2)
    index = ClusterIndex.build(torch.randn(3, 300, 16), cluster_size=8, levels=levels, coarse_size=4, iterations=5)
    q = torch.randn(3, 2, 1, 16)  # 3 KV heads, 2 query heads each
    rows, scored = index.select_one(q, 0.25, budget, slack=2.0)
    assert rows.shape == (3, min(budget, 300))
    expected_scored = 0
    for head in range(3):
        expected, mask, centroids = index.select(q[head], 0.25, head, budget, slack=2.0)
        assert sorted(rows[head].tolist()) == expected[mask[0]].tolist()
        expected_scored += centroids
        if levels == 1:
            assert expected[mask[0]].tolist() == _selected_by_hand(index, q[head], 0.25, head, budget)[0]
    assert scored == (0 if budget >= 300 else expected_scored)


def _use_kernels(monkeypatch, on: bool) -> None:
    if on and kernels.numba is None:
        pytest.skip("numba is not installed")
    monkeypatch.setenv("LONGREACH_KERNELS", "1" if on else "0")


def test_compiled_lookup_handles_uneven_clusters_and_breaks_ties_in_order(monkeypatch):
    """One cluster of 250 keys ranked last and 50 single keys: the cut falls among the singles or
    inside the big cluster (taken in part). Equal estimates (identical centroids) go to the lower
    cluster first, as in torch's stable sort."""
    _use_kernels(monkeypatch, True)
    torch.manual_seed(3)
    labels = torch.cat((torch.zeros(250, dtype=torch.long), torch.arange(1, 51))).view(1, -1)  # 1 x 250, 50 x 1
    q = torch.randn(1, 2, 1, 16)
    centroids = torch.randn(1, 51, 16)
    centroids[0, 0] = -3 * q[0, :, 0].mean(0)  # the big cluster ranks last
    centroids[0, 20:30] = centroids[0, 20]  # ties
    index = ClusterIndex(centroids, labels[:, torch.randperm(300)])
    for budget in (37, 60, 299):
        assert torch.equal(index.select_one(q, 0.25, budget)[0].sort(1).values,
                           index._select_one_torch(q, 0.25, budget).sort(1).values)
        assert sorted(index.select_one(q, 0.25, budget)[0][0].tolist()) == _selected_by_hand(
            index, q[0], 0.25, 0, budget)[0]


def test_compiled_lookup_keeps_every_tie_at_the_cut_and_takes_the_lower_clusters(monkeypatch):
    """50 clusters of 4 keys, budget 20: clusters 3..20 tie at the cut (one centroid); the 3 best
    and 2 of the tied fill the budget, and the tied ones taken must be the lowest, 3 and 4."""
    _use_kernels(monkeypatch, True)
    torch.manual_seed(4)
    q = torch.randn(1, 1, 1, 16)
    direction = q[0, 0, 0] / q[0, 0, 0].norm()
    centroids = torch.randn(1, 50, 16) * 0.1 - direction  # the rest: far below
    centroids[0, :3] = torch.tensor([6.0, 5.0, 4.0])[:, None] * direction
    centroids[0, 3:21] = 2.0 * direction
    index = ClusterIndex(centroids, torch.arange(50).repeat_interleave(4).view(1, -1))
    rows, _ = index.select_one(q, 1.0, 20)
    expected = torch.cat([torch.arange(c * 4, c * 4 + 4) for c in (0, 1, 2, 3, 4)])
    assert torch.equal(rows.sort(1).values[0], expected)
    assert torch.equal(index._select_one_torch(q, 1.0, 20).sort(1).values[0], expected)


def test_hierarchical_lookup_scores_fewer_centroids_and_keeps_the_budget():
    torch.manual_seed(1)
    keys = torch.randn(1, 4096, 16) + 3 * torch.randn(1, 4096, 1).sign() * torch.randn(1, 1, 16)
    flat = ClusterIndex.build(keys, cluster_size=16, levels=1)
    two = ClusterIndex.build(keys, cluster_size=16, levels=2, coarse_size=16)
    q = torch.randn(1, 1, 16)
    rows, mask, scored = two.select(q, 0.25, 0, budget=256, slack=2.0)
    assert int(mask.sum()) == 256 and scored < flat.select(q, 0.25, 0, budget=256)[2] / 2
    # the fine clusters it scores all belong to the coarse clusters it chose
    chosen_fine = two.labels[0, rows].unique()
    assert len(two.parent[0, chosen_fine].unique()) <= 2 * 256 / (16 * 16) + 2


def _question_logits(lm, context, question):
    session = lm.new_session()
    session.prefill(context, chunk=64)
    fork = session.fork()
    logits = [fork.prefill(question[:6], chunk=4)]
    logits += [fork.step(token) for token in question[6:]]
    return torch.stack(logits), fork


def test_full_budget_equals_the_exact_attention_of_each_position_scheme():
    model = tiny_hf_model()
    context, question = prompt_ids(200), prompt_ids(12, seed=4)
    dense, _ = _question_logits(tiny_lm(model=model), context, question)
    got, _ = _question_logits(tiny_lm(method="squeezed", model=model, positions="true", budget=1.0,
                                      cluster_size=4, obs_window=8), context, question)
    torch.testing.assert_close(got, dense, rtol=1e-4, atol=1e-5)
    far, _ = _question_logits(tiny_lm(method=FixedDistanceConfig(n_local=32), model=model), context, question)
    got, _ = _question_logits(tiny_lm(method="squeezed", model=model, budget=1.0, cluster_size=4,
                                      **{**SMALL_INFLLM, "topk_blocks": 1000}), context, question)
    torch.testing.assert_close(got, far, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(levels=2), dict(selection="threshold"),
                                     dict(selection="threshold", threshold_scope="head"), dict(kv_quant="int8")])
def test_decode_reads_a_budget_of_the_context_and_the_index_lives_in_the_store(options):
    lm = tiny_lm(method="squeezed", budget=0.25, cluster_size=4, **SMALL_INFLLM, **options)
    _, fork = _question_logits(lm, prompt_ids(200), prompt_ids(12, seed=4))
    layer = fork.store[0]
    memory = len(layer.segments["memory"])
    assert {"centroids", "labels"} <= set(layer.buffers) and layer.buffers["labels"].data.shape == (2, memory)
    touched = fork.policy.touched
    if "selection" not in options:
        assert touched["selected"] == touched["steps"] * 2 * round(0.25 * memory)  # budget per KV head
    else:
        thresholds = torch.stack([layer.buffers["threshold"].data for layer in fork.store])
        assert (thresholds == thresholds.flatten()[0]).all() == (options.get("threshold_scope") != "head")
    restored = lm.new_session()  # a saved memory keeps its clusters
    restored.store.load_state_dict(fork.store.state_dict())
    restored.position = fork.position
    torch.testing.assert_close(restored.step(7), fork.step(7))


def test_question_prompts_are_not_clustered_into_the_context():
    lm = tiny_lm(method="squeezed", positions="true", cluster_size=4, obs_window=8)
    _, fork = _question_logits(lm, prompt_ids(200), prompt_ids(12, seed=4))
    assert len(fork.store[0].segments["memory"]) == 192
    assert len(fork.store[0].segments["recent"]) == 8 + 12


def _estimate_by_hand(q, centroids, counts, scale, log_norm=None):
    """Per query: max over query heads of exp(q.c * scale - log_norm), log_norm over the clusters
    given (each counted as many times as it has keys) unless supplied."""
    logits = (q @ centroids.T) * scale  # [g, n, k]
    if log_norm is None:
        log_norm = torch.logsumexp(logits + counts.float().log(), -1, keepdim=True)
    return (logits - log_norm).exp().amax(0), log_norm


def test_threshold_selection_and_its_calibration_match_brute_force():
    torch.manual_seed(2)
    keys = torch.randn(1, 400, 16)
    index = ClusterIndex.build(keys, cluster_size=8, levels=1, iterations=5)
    calibration = torch.randn(2, 20, 16)
    index.calibrate([calibration], 0.25, budget=50)
    p, _ = _estimate_by_hand(calibration, index.centroids[0], index.counts[0], 0.25)
    pairs = sorted(((float(p[i, c]), int(index.counts[0, c])) for i in range(20) for c in range(p.shape[1])),
                   reverse=True)
    total, threshold = 0, None
    for value, count in pairs:  # the value at which the best (query, cluster) pairs hold 50 keys per query
        total += count
        if total >= 50 * 20:
            threshold = value
            break
    assert abs(float(index.threshold[0]) - threshold) < 1e-6
    q = torch.randn(2, 3, 16)
    rows, mask, _ = index.select(q, 0.25, 0, budget=50)
    p, _ = _estimate_by_hand(q, index.centroids[0], index.counts[0], 0.25)
    for i in range(3):
        clusters = (p[i] >= index.threshold[0]).nonzero().squeeze(1)
        expected = torch.isin(index.labels[0], clusters).nonzero().squeeze(1)
        assert rows[mask[i]].tolist() == expected.tolist()


def test_global_threshold_is_one_value_keeping_the_budget_over_all_layers_and_heads_by_brute_force():
    torch.manual_seed(4)
    spread = [torch.randn(2, 300, 16) * s for s in (0.5, 2.0)]  # two layers, sharper keys in the second
    indexes = [ClusterIndex.build(keys, cluster_size=10, levels=1, iterations=5) for keys in spread]
    queries = [[torch.randn(2, 12, 16) for _ in range(2)] for _ in indexes]
    calibrate_globally(indexes, queries, 0.25, budget=40)
    pairs = []  # (estimate, keys per query it stands for) of every layer, head, query and cluster
    for index, qs in zip(indexes, queries, strict=True):
        for head, q in enumerate(qs):
            p, _ = _estimate_by_hand(q, index.centroids[head], index.counts[head], 0.25)
            pairs += [(float(p[i, c]), int(index.counts[head, c]) / 12) for i in range(12) for c in range(p.shape[1])]
    total, expected = 0.0, None
    for value, weight in sorted(pairs, reverse=True):
        total += weight
        if total >= 40 * 4 - 1e-9:
            expected = value
            break
    thresholds = torch.cat([index.threshold for index in indexes])
    assert torch.all(thresholds == thresholds[0]) and abs(float(thresholds[0]) - expected) < 1e-6
    kept = [[int(index.select(q, 0.25, head, budget=40)[1].sum()) / 12 for head, q in enumerate(qs)]
            for index, qs in zip(indexes, queries, strict=True)]
    assert len({round(k) for row in kept for k in row}) > 1  # layers and heads keep different amounts


def test_hierarchical_lookup_matches_brute_force():
    torch.manual_seed(3)
    keys = torch.randn(1, 2048, 16) + 2 * torch.randn(1, 2048, 1).sign() * torch.randn(1, 1, 16)
    index = ClusterIndex.build(keys, cluster_size=8, levels=2, coarse_size=8, method="flat", iterations=4)
    q, scale, budget, slack = torch.randn(2, 4, 16), 0.25, 96, 2.0
    rows, mask, scored = index.select(q, scale, 0, budget, slack)
    coarse_counts = torch.zeros(index.coarse.shape[1], dtype=torch.long).index_add_(
        0, index.parent[0], index.counts[0])
    coarse_p, log_norm = _estimate_by_hand(q, index.coarse[0], coarse_counts, scale)
    fine_p, _ = _estimate_by_hand(q, index.centroids[0], index.counts[0], scale, log_norm)
    n_scored = set()
    for i in range(4):
        taken, before = [], 0
        for c in sorted(range(len(coarse_counts)), key=lambda c: (-float(coarse_p[i, c]), c)):
            if before >= slack * budget:
                break
            taken.append(c)
            before += int(coarse_counts[c])
        fine = [f for f in range(index.centroids.shape[1]) if int(index.parent[0, f]) in taken]
        n_scored |= set(fine)
        chosen = []
        for f in sorted(fine, key=lambda f: (-float(fine_p[i, f]), f)):
            members = (index.labels[0] == f).nonzero().squeeze(1).tolist()
            chosen += members[:budget - len(chosen)]
        assert rows[mask[i]].tolist() == sorted(chosen) and len(chosen) == budget
    assert scored == index.coarse.shape[1] + len(n_scored)


def test_a_question_reads_the_lookup_the_same_at_any_chunk_size():
    lm = tiny_lm(method="squeezed", budget=0.25, cluster_size=4, **SMALL_INFLLM)
    context, question = prompt_ids(200), prompt_ids(12, seed=4)
    session = lm.new_session()
    session.prefill(context, chunk=64, final=False)
    whole = session.fork().prefill(question, chunk=12, all_logits=True)
    for chunk in (5, 1):
        torch.testing.assert_close(session.fork().prefill(question, chunk=chunk, all_logits=True), whole,
                                   rtol=1e-4, atol=1e-5)


def test_decode_cost_counts_every_kv_head_of_the_unclustered_tokens():
    lm = tiny_lm(method="squeezed", budget=0.25, cluster_size=4, **SMALL_INFLLM)
    _, fork = _question_logits(lm, prompt_ids(200), prompt_ids(12, seed=4))
    before = dict(fork.policy.touched)
    layer = fork.store[0]
    unclustered = len(layer.segments["recent"]) + 1 + len(layer.segments["init"])  # after the next token
    fork.step(7)
    steps = fork.policy.touched["steps"] - before["steps"]  # one per layer
    assert fork.policy.touched["other"] - before["other"] == steps * unclustered * fork.policy.ctx.n_kv_heads


def test_true_positions_refuse_an_input_past_the_trained_window():
    from longreach.errors import LongreachError
    lm = tiny_lm(method="squeezed", positions="true")
    window = lm.adapter.trained_window
    session = lm.new_session()
    session.prefill(prompt_ids(window - 8), chunk=64)  # fits
    with pytest.raises(LongreachError, match="past the trained window"):
        session.prefill(prompt_ids(16, seed=1), chunk=64)
    scaled = tiny_lm(method="squeezed", positions="true", rope_scaling="yarn", rope_factor=2.0).new_session()
    scaled.prefill(prompt_ids(window + 16), chunk=64)  # YaRN doubles the window it may reach


@pytest.mark.parametrize("kernels_on", [True, False])
@pytest.mark.parametrize("positions", ["infllm", "true"])
def test_decode_timing_of_the_whole_context_leaves_the_output_alone(positions, kernels_on, monkeypatch):
    _use_kernels(monkeypatch, kernels_on)
    options = SMALL_INFLLM if positions == "infllm" else {"positions": "true", "obs_window": 8}
    lm = tiny_lm(method="squeezed", budget=0.25, cluster_size=4, **options)
    _, plain = _question_logits(lm, prompt_ids(200), prompt_ids(12, seed=4))
    _, timed = _question_logits(lm, prompt_ids(200), prompt_ids(12, seed=4))
    timed.policy.time_whole_context = True
    torch.testing.assert_close(timed.step(7), plain.step(7), rtol=0, atol=0)
    assert plain.policy.timing["whole"] == 0.0 and plain.policy.timing["lookup"] > 0
    timing = timed.policy.timing
    assert timing["whole"] > 0 and timing["lookup"] > 0 and timing["other"] > 0
    # the compiled decode step reads the memory in place; otherwise each layer's context is read once
    assert len(timed.policy._whole) == (0 if kernels_on else lm.adapter.n_layers)


@pytest.mark.parametrize("kernels_on", [True, False])
@pytest.mark.parametrize("options", [SMALL_INFLLM, {**SMALL_INFLLM, "levels": 2},
                                     {"positions": "true", "obs_window": 8},
                                     {"positions": "true", "obs_window": 8, "levels": 2},
                                     {"positions": "true", "obs_window": 8, "rotated_copy": False}])
def test_the_cluster_layout_changes_where_keys_lie_and_nothing_else(options, kernels_on, monkeypatch):
    """Each head's memory stored cluster by cluster (read in place by the kernel, or gathered)
    answers as the memory kept in token order does; its rows are that memory's, moved, and the
    "head_positions" buffer holds each row's true position."""
    _use_kernels(monkeypatch, kernels_on)
    in_place = []
    monkeypatch.setattr(squeezed, "attend_segments",
                        lambda *a, **kw: in_place.append(1) or attend_segments(*a, **kw))
    model, context, question = tiny_hf_model(), prompt_ids(200), prompt_ids(12, seed=4)
    lm = tiny_lm(method="squeezed", model=model, budget=0.25, cluster_size=4, **options)
    got, laid_out = _question_logits(lm, context, question)
    # decode steps read their rows in place with the kernels on; with true positions, from a copy
    # of the memory's keys rotated once (in the store, so counted and saved)
    assert bool(in_place) == (kernels_on and options.get("rotated_copy", True))
    rotated = laid_out.store[0].buffers.get("rotated_memory")
    assert (rotated is not None) == (bool(in_place) and "positions" in options)
    if rotated is not None:
        memory, head_positions = laid_out.store[0].segments["memory"], laid_out.store[0].buffers["head_positions"]
        torch.testing.assert_close(rotated.data, laid_out.policy.rope.rotate(memory.keys, head_positions.data.long()),
                                   rtol=0, atol=0)
    monkeypatch.setattr(SqueezedPolicy, "cluster_layout", False)
    expected, plain = _question_logits(tiny_lm(method="squeezed", model=model, budget=0.25, cluster_size=4,
                                               **options), context, question)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if rotated is not None:  # counted: the store's bytes include the copy
        assert laid_out.store.nbytes >= plain.store.nbytes + model.config.num_hidden_layers * rotated.nbytes
    for layer in (0, model.config.num_hidden_layers - 1):
        memory, reference = laid_out.store[layer].segments["memory"], plain.store[layer].segments["memory"]
        head_positions = laid_out.store[layer].buffers["head_positions"].data
        assert "head_positions" not in plain.store[layer].buffers
        assert (laid_out.store[layer].buffers["labels"].data.diff(dim=1) >= 0).all()  # cluster by cluster
        row_of = {p: i for i, p in enumerate(reference.positions.tolist())}
        for h in range(memory.n_kv_heads):
            at = torch.tensor([row_of[p] for p in head_positions[h].tolist()])
            assert sorted(at.tolist()) == list(range(len(reference)))
            assert torch.equal(memory.keys[0, h], reference.keys[0, h, at])
            assert torch.equal(memory.values[0, h], reference.values[0, h, at])
    restored = lm.new_session()  # saved and loaded, the layout and its positions come back
    restored.store.load_state_dict(laid_out.store.state_dict())
    restored.position = laid_out.position
    torch.testing.assert_close(restored.step(7), laid_out.step(7), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_compiled_cut_takes_the_best_clusters_in_rank_order_with_ties_and_empty_clusters(seed):
    """The compiled cut (a binary search over the probabilities' bit patterns) against a stable
    sort by falling probability: many exact ties, empty clusters, budgets from 1 to all but one."""
    if kernels.numba is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    k = 200
    counts = rng.integers(0, 9, k)
    starts = np.cumsum(counts) - counts
    members = rng.permutation(int(counts.sum()))
    probability = (rng.integers(0, 12, k) / 16).astype(np.float32)  # ties, zeros included
    ranks = probability.view(np.int32).copy()
    ranks[probability == 0] = rng.choice([0, -1, -(2**31)], int((probability == 0).sum()))  # NaN-like: as 0
    for budget in (1, 7, int(counts.sum()) // 2, int(counts.sum()) - 1):
        rows = np.full(budget, -1, np.int64)
        _take_best(ranks, counts, starts, members, budget, rows)
        expected, left = [], budget
        for c in sorted(range(k), key=lambda c: -probability[c]):  # stable: ties by cluster
            take = min(int(counts[c]), left)
            expected += members[starts[c]:starts[c] + take].tolist()
            left -= take
        assert sorted(rows.tolist()) == sorted(expected)


@pytest.mark.parametrize("rotated_copy", [True, False])
def test_true_positions_keep_the_rotated_copy_from_the_clustering_on(rotated_copy, monkeypatch):
    """The rotated copy is made when the context is clustered, so the session a question forks
    from (and a saved context) has it and a fork reads the same; rotated_copy=false keeps none
    and decodes the same logits the slower way, timer included; the option does not change what
    a saved memory must match."""
    _use_kernels(monkeypatch, True)
    model = tiny_hf_model()
    lm = tiny_lm(method="squeezed", model=model, budget=0.25, cluster_size=4, positions="true", obs_window=8,
                 rotated_copy=rotated_copy)
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=64)
    assert ("rotated_memory" in session.store[0].buffers) == rotated_copy
    fork = session.fork()
    fork.policy.time_whole_context = True
    fork.prefill(prompt_ids(6, seed=4), chunk=4)
    got = torch.stack([fork.step(t) for t in (7, 8, 9)])
    assert fork.policy.timing["whole"] > 0
    other = tiny_lm(method="squeezed", model=model, budget=0.25, cluster_size=4, positions="true",
                    obs_window=8, rotated_copy=not rotated_copy)
    plain = other.new_session()
    plain.prefill(prompt_ids(200), chunk=64)
    plain.prefill(prompt_ids(6, seed=4), chunk=4)
    torch.testing.assert_close(got, torch.stack([plain.step(t) for t in (7, 8, 9)]), rtol=1e-5, atol=1e-6)
    assert "rotated_copy" in lm.method.to_dict() and "rotated_copy" not in lm.method.memory_options()
    assert lm.method.memory_options() == other.method.memory_options()
