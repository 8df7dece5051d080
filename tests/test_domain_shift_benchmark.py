"""benchmarks/magicpoint_domain_shift.py: the batch-norm fit measure on hand-made statistics."""

import pytest
import torch

from tests.fixtures.benchmark_scripts import load_benchmark


def _bench():
    return load_benchmark("magicpoint_domain_shift")


def test_bn_fit_is_the_median_standardised_mean_error_per_layer():
    bench = _bench()
    first, second = torch.nn.BatchNorm2d(3, eps=0.0), torch.nn.BatchNorm2d(1, eps=0.0)
    first.running_mean = torch.tensor([0.0, 1.0, 2.0])
    first.running_var = torch.tensor([4.0, 1.0, 1.0])
    second.running_mean = torch.tensor([10.0])
    second.running_var = torch.tensor([25.0])
    model = torch.nn.Sequential(first, torch.nn.Conv2d(3, 1, 1, bias=False), second)
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    # channel means of the input over both batches: (1, 1, 5) -> |1-0|/2, |1-1|/1, |5-2|/1 = 0.5, 0, 3
    a = torch.tensor([1.0, 1.0, 5.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
    a[0] += 1.0
    a[1] -= 1.0  # the two images average out to the means above
    fits = bench.bn_fit(model, [a[:1], a[1:]])
    # second layer: its input is the first layer's output summed over channels (eval-mode batch norm)
    with torch.no_grad():
        mid = model[1](first(a)).mean()
    assert fits[0] == pytest.approx(0.5)
    assert fits[1] == pytest.approx(abs(float(mid) - 10.0) / 5.0)
    assert not any(m.training for m in model.modules())
