"""GNN branch, fusion, heads, kNN graph: invariances, gates, masking."""

from __future__ import annotations

import pytest
import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.branch import GNNBranch
from culturesim_ray.models.fusion import CrossModalFusion
from culturesim_ray.models.heads import ProjectionHead, ThemeHeads


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_gnn_branch_is_permutation_equivariant(conv):
    torch.manual_seed(0)
    x = torch.randn(40, 12)
    ei, _ = knn_edges(x, 4)
    branch = GNNBranch(12, 16, layers=3, conv=conv).eval()
    h, raw = branch(x, ei)
    perm = torch.randperm(40)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(40)
    h2, raw2 = branch(x[perm], inv[ei])
    torch.testing.assert_close(h2, h[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(raw2, raw[perm])


def test_knn_graph_symmetric_without_self_loops():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    ei, w = knn_edges(x, 1)
    pairs = set(map(tuple, ei.T.tolist()))
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert torch.all(w > 0.9)


@pytest.mark.parametrize("variant", ["attention", "transformer", "mlp"])
def test_missing_modality_is_masked_not_zero_filled(variant):
    torch.manual_seed(0)
    fusion = CrossModalFusion(16, modalities=3, heads=4, variant=variant).eval()
    tokens = torch.randn(4, 3, 16)
    mask = torch.tensor([[True, True, True], [True, False, True], [True, False, False],
                         [False, True, False]])
    out = fusion(tokens, mask)
    changed = tokens.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 16) * 100  # garbage where absent
    torch.testing.assert_close(fusion(changed, mask), out, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="row 0 has no modality"):
        fusion(tokens, torch.zeros(4, 3, dtype=torch.bool))


def test_gates_lie_in_zero_one_and_are_per_modality():
    torch.manual_seed(0)
    fusion = CrossModalFusion(16, heads=4)
    with torch.no_grad():
        fusion.gate.normal_()
    fusion(torch.randn(5, 3, 16), torch.ones(5, 3, dtype=torch.bool))
    g = fusion.last_gates
    assert g.shape == (5, 3) and bool(((g > 0) & (g < 1)).all())
    assert fusion.gate.shape[0] == 3


def test_heads_normalised_and_new_theme_leaves_others_untouched():
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    proj = ProjectionHead(16, 8)
    torch.testing.assert_close(proj(x).norm(dim=1), torch.ones(6))
    heads = ThemeHeads(16, ["music", "religion"], out=8).eval()
    emb, gate = heads(x)
    assert set(emb) == {"music", "religion"} and gate.shape == (6, 2)
    torch.testing.assert_close(gate.sum(1), torch.ones(6))
    before = {k: v.clone() for k, v in heads.heads.state_dict().items()}
    heads.add_theme("craft")
    emb2, gate2 = heads(x)
    assert gate2.shape == (6, 3)
    for k, v in before.items():
        assert torch.equal(heads.heads.state_dict()[k], v)
    torch.testing.assert_close(emb2["music"], emb["music"])
    with pytest.raises(ValueError, match="exists"):
        heads.add_theme("music")
