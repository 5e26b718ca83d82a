"""The joint model: shapes, the exact score split, causality, cold items, ablation switches, losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from scenerec.config import ModelConfig
from scenerec.model.item_item import ItemItem, Neighbours
from scenerec.model.joint import JointModel
from scenerec.model.losses import alignment_infonce, sampled_softmax, window_softmax

N, S, DEVICES, T, L, B = 12, 3, 2, 8, 6, 4
CONFIG = ModelConfig(dim=16, max_history=L, layers=1, heads=2, scene_dim=4, popularity_buckets=2, dropout=0.0)


def build(config: ModelConfig = CONFIG, seed: int = 0, cold: list[int] | None = None) -> JointModel:
    torch.manual_seed(seed)
    text = torch.randn(N, T)
    bucket = torch.arange(N) % 2
    cold_mask = torch.zeros(N, dtype=torch.bool)
    cold_mask[cold or []] = True
    model = JointModel(config, N, S, DEVICES, text, bucket, cold_mask, random_neighbours(seed))
    with torch.no_grad():  # move every zero-initialised table off zero so each part matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def random_neighbours(seed: int, k: int = 3) -> Neighbours:
    """A sparse B of random weights over distinct other items (row N is the pad)."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.stack([(j + 1 + torch.randperm(N - 1, generator=g)[:k]) % N for j in range(N)])
    return Neighbours(
        columns=torch.cat([columns, torch.full((1, k), N)]).numpy(),
        weights=torch.cat([torch.rand(N, k, generator=g), torch.zeros(1, k)]).numpy(),
        l2=1.0,
    )


def request(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, N, (B, L), generator=g)
    hist[0, :3] = N  # a left-padded history
    scenes = torch.randint(0, S, (B, L), generator=g)
    scenes[0, :3] = S
    return {
        "hist_items": hist,
        "hist_scenes": scenes,
        "scene": torch.randint(0, S, (B,), generator=g),
        "device": torch.randint(0, DEVICES, (B,), generator=g),
        "hour": torch.randint(0, 24, (B,), generator=g),
        "weekday": torch.randint(0, 7, (B,), generator=g),
    }


def test_shapes_per_request_and_per_position() -> None:
    model = build()
    items = model.item_side()
    q_dim = 2 * CONFIG.dim + CONFIG.transition_dim + CONFIG.scene_dim + 1
    assert model.query_dim == q_dim
    assert items.vectors().shape == (N, q_dim)
    query = model.query_side(**request())
    assert query.vectors().shape == (B, q_dim) and query.lam.shape == (B,)
    r = request()
    per_position = model.query_side(
        r["hist_items"],
        r["hist_scenes"],
        r["hist_scenes"].clamp(max=S - 1),
        r["hist_items"] % DEVICES,
        r["hist_items"] % 24,
        r["hist_items"] % 7,
    )
    assert per_position.vectors().shape == (B, L, q_dim)


def test_score_splits_exactly_into_its_parts() -> None:
    model = build()
    items = model.item_side()
    query = model.query_side(**request())
    candidates = torch.randint(0, N, (B, 5))
    parts = model.score_parts(query, items, candidates, request()["hist_items"])
    full = model.retrieval_scores(query, items.vectors(), request()["hist_items"]).gather(1, candidates)
    assert torch.allclose(parts.sum(-1), full, atol=1e-5)
    assert (parts[..., :3].abs() > 1e-6).all(dim=(0, 1)).tolist() == [True, True, True]
    assert (parts[..., 3].abs() > 1e-6).any()  # the item-item part contributes (0 only off B's support)


def test_item_item_part_sums_the_history_rows_of_b() -> None:
    """score_ii(i) = sum over history j of B[j, i], per request and after each position (brute force)."""
    neighbours = random_neighbours(0)
    dense = torch.zeros(N + 1, N + 1)
    for j in range(N + 1):
        for col, w in zip(neighbours.columns[j], neighbours.weights[j], strict=True):
            dense[j, col] += float(w)
    table = ItemItem(neighbours)
    hist = request()["hist_items"]
    per_request = table.scores(hist, per_request=True)
    assert torch.allclose(per_request, dense[hist].sum(1)[:, :N], atol=1e-6)
    per_position = table.scores(hist, per_request=False)
    assert torch.allclose(per_position, dense[hist].cumsum(1)[..., :N], atol=1e-6)
    keep = torch.tensor([5, 0, 7])  # a candidate subset as sampled softmax asks for it
    columns = torch.full((N + 1,), len(keep))
    columns[keep] = torch.arange(len(keep))
    subset = table.scores(hist, per_request=False, columns=columns)
    assert torch.allclose(subset[..., : len(keep)], per_position[..., keep], atol=1e-6)


def test_no_item_item_switch_zeroes_the_part() -> None:
    model = build(dataclasses.replace(CONFIG, use_item_item=False))
    r = request()
    parts = model.score_parts(
        model.query_side(**r), model.item_side(), torch.randint(0, N, (B, 5)), r["hist_items"]
    )
    assert torch.equal(parts[..., 3], torch.zeros_like(parts[..., 3]))


def test_same_seed_same_model_other_seed_other_model() -> None:
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    r = request()
    assert torch.equal(a.query_side(**r).vectors(), b.query_side(**r).vectors())
    assert not torch.allclose(a.query_side(**r).vectors(), c.query_side(**r).vectors())


def test_positions_never_see_the_future() -> None:
    model = build()
    r = request()
    ctx = {k: r["hist_items"] % m for k, m in (("device", DEVICES), ("hour", 24), ("weekday", 7))}
    args = (r["hist_scenes"].clamp(max=S - 1),)
    before = model.query_side(r["hist_items"], r["hist_scenes"], *args, **ctx).vectors()
    changed = r["hist_items"].clone()
    changed[:, -1] = (changed[:, -1] + 1) % N
    after = model.query_side(changed, r["hist_scenes"], *args, **ctx).vectors()
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("switch", [{}, {"use_sequence": False}, {"use_scene": False}])
def test_a_request_equals_the_last_position_of_the_sequence(switch: dict) -> None:
    """The request path (last block on the last position only, means without cumsum) computes
    exactly what training computes at the history's last position."""
    model = build(dataclasses.replace(CONFIG, layers=2, **switch))
    r = request()
    last = {k: r[k][:, None].expand(B, L) for k in ("scene", "device", "hour", "weekday")}
    per_position = model.query_side(r["hist_items"], r["hist_scenes"], **last)
    per_request = model.query_side(**r)
    for a, b in zip(per_request, per_position, strict=True):
        assert torch.allclose(a, b[:, -1], atol=1e-5)


def test_left_padding_does_not_change_a_request() -> None:
    model = build()
    r = request()
    r["hist_items"][:, :2], r["hist_scenes"][:, :2] = N, S  # every row starts with two pads
    trimmed = dict(r, hist_items=r["hist_items"][:, 2:], hist_scenes=r["hist_scenes"][:, 2:])
    assert torch.allclose(model.query_side(**r).vectors(), model.query_side(**trimmed).vectors(), atol=1e-5)


def test_padding_content_is_ignored() -> None:
    model = build()
    r = request()
    other = dict(r)
    other["hist_scenes"] = r["hist_scenes"].clone()
    other["hist_scenes"][0, :3] = 0  # a different scene under the pad positions
    assert torch.allclose(
        model.query_side(**r).vectors()[0], model.query_side(**other).vectors()[0], atol=1e-6
    )


def test_cold_items_take_vectors_generated_from_text() -> None:
    model = build(cold=[5])
    items = model.item_side()
    ids, _, bias = model.items.generated(items.raw_text)
    assert torch.allclose(items.ids[5], ids[5]) and torch.allclose(items.bias[5], bias[5])
    assert not torch.allclose(items.ids[4], ids[4])  # a warm item keeps its learned vector
    drop = torch.zeros(N, dtype=torch.bool)
    drop[4] = True
    assert torch.allclose(model.item_side(drop).ids[4], ids[4])
    # a cold (or ID-dropped) item follows nothing the model knows of: zero successor vector
    assert items.successor.shape == (N, CONFIG.transition_dim)
    assert not items.successor[5].any() and items.successor[4].abs().sum() > 0
    assert not model.item_side(drop).successor[4].any()


def test_transition_reads_only_the_latest_item() -> None:
    """The FPMC part of a request's collaborative query is the latest history item's own vector
    (without scene gates to rescale it): older items do not move it."""
    model = build(dataclasses.replace(CONFIG, use_scene=False))
    with torch.no_grad():  # zero at init (it learns from there): give it values to compare
        model.items.transition.weight[:N].normal_()
    r = request()
    d = CONFIG.dim
    older = {**r, "hist_items": r["hist_items"].clone()}
    older["hist_items"][:, -2] = (older["hist_items"][:, -2] + 1) % N
    latest = {**r, "hist_items": r["hist_items"].clone()}
    latest["hist_items"][:, -1] = (latest["hist_items"][:, -1] + 1) % N
    base = model.query_side(**r).cf[:, d:]
    assert base.shape == (B, CONFIG.transition_dim)
    assert torch.equal(base, model.items.transition.weight[r["hist_items"][:, -1]])
    assert torch.equal(model.query_side(**older).cf[:, d:], base)
    assert not torch.allclose(model.query_side(**latest).cf[:, d:], base)


@pytest.mark.parametrize(
    ("switch", "zero_part"), [({"use_text": False}, 1), ({"learn_lambda": False, "lambda_init": 0.0}, 1)]
)
def test_ablation_switches_remove_the_text_part(switch: dict, zero_part: int) -> None:
    model = build(dataclasses.replace(CONFIG, **switch))
    r = request()
    parts = model.score_parts(
        model.query_side(**r), model.item_side(), torch.randint(0, N, (B, 5)), r["hist_items"]
    )
    assert torch.allclose(parts[..., zero_part], torch.zeros(()), atol=1e-7)


def test_no_scene_ignores_the_request_scene() -> None:
    model = build(dataclasses.replace(CONFIG, use_scene=False))
    r = request()
    moved = {**r, "scene": (r["scene"] + 1) % S, "device": (r["device"] + 1) % DEVICES}
    assert torch.allclose(model.query_side(**r).vectors(), model.query_side(**moved).vectors())
    scene_aware = build()
    assert not torch.allclose(
        scene_aware.query_side(**r).vectors(), scene_aware.query_side(**moved).vectors()
    )


def test_window_softmax_is_cross_entropy_and_skips_absent_items() -> None:
    torch.manual_seed(0)
    q, items, targets = torch.randn(5, 7), torch.randn(N, 7), torch.tensor([0, 1, 2, 3, 4])
    windows = q[None], targets[None]  # one window of 5 positions
    assert torch.allclose(
        window_softmax(windows[0], items, windows[1]), F.cross_entropy(q @ items.T, targets)
    )
    absent = torch.zeros(N, dtype=torch.bool)
    absent[8:] = True
    assert torch.allclose(
        window_softmax(windows[0], items, windows[1], absent=absent),
        F.cross_entropy(q @ items[:8].T, targets),
    )


def test_sampled_softmax_masks_hits_and_absent_items() -> None:
    torch.manual_seed(0)
    q, items = torch.randn(6, 7), torch.randn(N, 7)
    targets = torch.tensor([0, 0, 1, 2, 3, 3])
    popularity = torch.full((N,), 1.0 / N)
    absent = torch.zeros(N, dtype=torch.bool)
    absent[10:] = True
    loss = sampled_softmax(
        q, items, targets, 50, popularity, generator=torch.Generator().manual_seed(1), absent=absent
    )
    assert torch.isfinite(loss) and loss > 0
    # with orthogonal items, a query pointing at its target has a far lower loss than a random one
    orthogonal = torch.eye(N)
    aligned = orthogonal[targets] * 10
    random_query = torch.randn(6, N)
    assert sampled_softmax(aligned, orthogonal, targets, 50, popularity, absent=absent) < 0.01
    assert sampled_softmax(random_query, orthogonal, targets, 50, popularity, absent=absent) > 0.5


def test_alignment_infonce_rewards_matching_pairs() -> None:
    torch.manual_seed(0)
    ids = torch.randn(8, 16)
    assert alignment_infonce(ids, ids + 0.01 * torch.randn(8, 16), 0.1) < alignment_infonce(
        ids, torch.randn(8, 16), 0.1
    )


def test_item_side_of_some_rows_equals_those_rows_of_the_whole_catalogue() -> None:
    """A sampled-softmax step computes only the rows it reads (cost bounded by the batch, not N)."""
    model = build(cold=[5])
    drop = torch.zeros(N, dtype=torch.bool)
    drop[2] = True
    rows = torch.tensor([1, 2, 5, 9])
    whole, part = model.item_side(drop), model.item_side(drop, rows=rows)
    for name, value in whole._asdict().items():
        assert torch.allclose(getattr(part, name), value[rows], atol=1e-6), name
    r = request()
    read = torch.unique(r["hist_items"][r["hist_items"] < N])  # the history's items only
    local = torch.full((N + 1,), len(read), dtype=torch.int64)
    local[read] = torch.arange(len(read))
    query_whole = model.query_side(**r, items=whole)
    some = model.item_side(drop, rows=read)
    query_part = model.query_side(**r, items=some, item_rows=local[r["hist_items"]])
    assert len(read) < N
    assert torch.allclose(query_part.vectors(), query_whole.vectors(), atol=1e-6)


def test_sampled_softmax_over_the_steps_rows_equals_it_over_the_catalogue() -> None:
    torch.manual_seed(0)
    q, items = torch.randn(5, 7), torch.randn(N, 7)
    targets = torch.tensor([0, 3, 3, 7, 8])
    uniform = torch.tensor([1, 4, 8, 11])
    popularity = torch.softmax(torch.randn(N), 0)
    absent = torch.zeros(N, dtype=torch.bool)
    absent[11] = True
    whole = sampled_softmax(q, items, targets, uniform, popularity, absent=absent)
    rows = torch.unique(torch.cat([targets, uniform]))  # [0, 1, 3, 4, 7, 8, 11]
    local = torch.full((N,), -1, dtype=torch.int64)
    local[rows] = torch.arange(len(rows))
    part = sampled_softmax(
        q, items[rows], local[targets], local[uniform], popularity[rows], absent=absent[rows], n_catalogue=N
    )
    assert torch.allclose(part, whole, atol=1e-6)
    # without n_catalogue the logQ term would use K/R: a different (wrong) correction
    wrong = sampled_softmax(
        q, items[rows], local[targets], local[uniform], popularity[rows], absent=absent[rows]
    )
    assert not torch.allclose(wrong, whole, atol=1e-4)
