"""The shared losses (hf_xmodal/models/losses.py) against their definitions."""

import torch
import torch.nn.functional as F

from hf_xmodal.models.losses import unit_distance, weighted_sum


def test_unit_distance_is_the_euclidean_distance_of_unit_rows():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    b = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    torch.testing.assert_close(unit_distance(a, b), torch.cdist(a, b))
    torch.testing.assert_close(unit_distance(a, b, squared=True), torch.cdist(a, b).square())


def test_unit_distance_of_a_point_to_itself_has_a_finite_gradient():
    a = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    unit_distance(a, a).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_weighted_sum_weights_each_term_by_its_name_and_detaches_the_terms():
    x = torch.tensor(2.0, requires_grad=True)
    terms = {"a": x * 3, "b": x.square()}
    loss, weighted = weighted_sum(terms, {"b": 0.5, "a": 2.0})
    assert loss.item() == 2.0 * 6 + 0.5 * 4
    assert {k: v.item() for k, v in weighted.items()} == {"a": 12.0, "b": 2.0}
    assert not any(v.requires_grad for v in weighted.values())
    loss.backward()
    assert x.grad.item() == 2.0 * 3 + 0.5 * 2 * 2
