import numpy as np
import torch

from utils.matching import mutual_nearest_neighbours, mutual_nn


def test_mutual_nn_by_hand_with_ties_and_padding():
    # A0 -> B1 and B1 -> A0 (mutual); A1's nearest is B1 too (not mutual); A2 ties B0 / B2 -> B0,
    # B0's nearest is A2 -> mutual. A3 is padding, B2 is padding in the second batch item.
    dist = torch.tensor([[[5.0, 1.0, 9.0],
                          [4.0, 2.0, 8.0],
                          [3.0, 7.0, 3.0],
                          [0.0, 0.0, 0.0]]])
    mask_a = torch.tensor([[True, True, True, False]])
    nn, mutual = mutual_nn(dist, mask_a, torch.ones(1, 3, dtype=torch.bool))
    assert nn[0, :3].tolist() == [1, 1, 0]
    assert mutual[0].tolist() == [True, False, True, False]
    # padding B0 out: A2 now goes to B2 (mutual), A1 still loses B1 to A0
    nn, mutual = mutual_nn(dist, mask_a, torch.tensor([[False, True, True]]))
    assert nn[0, :3].tolist() == [1, 1, 2] and mutual[0].tolist() == [True, False, True, False]


def test_numpy_matches_follow_the_batched_rule_and_the_tests():
    rng = np.random.default_rng(3)
    dist = rng.uniform(0, 1, size=(30, 25)).astype(np.float32)
    m = mutual_nearest_neighbours(dist)
    by_loop = [(i, int(dist[i].argmin())) for i in range(30) if int(dist[:, dist[i].argmin()].argmin()) == i]
    assert list(zip(m.idx1.tolist(), m.idx2.tolist())) == by_loop
    np.testing.assert_array_equal(m.distance, dist[m.idx1, m.idx2])
    close = mutual_nearest_neighbours(dist, max_distance=0.05)
    assert set(close.idx1.tolist()) == {i for i, j in by_loop if dist[i, j] < 0.05}


def test_mutual_nn_of_bfloat16_distances():
    # training validation under bf16 autocast hands over bf16 similarities
    dist = torch.tensor([[[0.5, 0.25], [0.125, 1.0]]], dtype=torch.bfloat16)
    nn, mutual = mutual_nn(dist)
    assert nn[0].tolist() == [1, 0] and mutual[0].tolist() == [True, True]
