"""The ComprExIT module: depth weights, slot shapes and masks, gradients, efficient == plain form."""

import math

import pytest
import torch
import torch.nn.functional as F

from comprexit import BackboneIdentity, ComprExIT, ComprExITConfig, ConfigError
from comprexit.modules.depth import rms_normalize

IDENTITY = BackboneIdentity("toy", "llama", hidden_size=48, num_layers=5, vocab_size=100)


def make(config=None, seed=0):
    torch.manual_seed(seed)
    model = ComprExIT(config or ComprExITConfig(window=32), IDENTITY)
    # W_rho starts at zero (uniform capacity); perturb it so every path is exercised
    with torch.no_grad():
        model.width.capacity.weight.normal_(0, 0.1)
    return model


def inputs(batch=2, tokens=50, seed=1, lengths=None):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, tokens, IDENTITY.num_layers + 1, IDENTITY.hidden_size, generator=g)
    hidden = hidden * torch.logspace(0, 4, IDENTITY.num_layers + 1)[None, None, :, None]  # Gemma-like growth
    lengths = lengths or [tokens - 7 * i for i in range(batch)]
    mask = torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None]
    return hidden, mask


def test_depth_weights_sum_to_one_on_tokens_and_zero_on_padding():
    model = make()
    hidden, mask = inputs()
    _, weights = model.depth(hidden, mask)
    torch.testing.assert_close(weights.sum(-1)[mask], torch.ones(int(mask.sum())))
    assert weights[~mask].abs().max() == 0


def test_padding_content_does_not_change_real_slots():
    model = make()
    hidden, mask = inputs(batch=1, tokens=40, lengths=[29])
    noisy = hidden.clone()
    noisy[:, 29:] = torch.randn_like(noisy[:, 29:]) * 1e5
    a, b = model(hidden, mask), model(noisy, mask)
    torch.testing.assert_close(a.slots, b.slots)


@pytest.mark.parametrize("ratio", [2, 4, 8, 16])
@pytest.mark.parametrize("tokens", [1, 31, 32, 45, 100])
def test_shapes_and_slot_masks(ratio, tokens):
    config = ComprExITConfig(ratio=ratio, window=32)
    model = make(config)
    hidden, mask = inputs(batch=2, tokens=tokens, lengths=[tokens, max(1, tokens // 2)])
    out = model(hidden, mask)
    windows = math.ceil(tokens / 32)
    assert out.slots.shape == (2, windows * math.ceil(32 / ratio), IDENTITY.hidden_size)
    for row, length in enumerate([tokens, max(1, tokens // 2)]):
        assert int(out.mask[row].sum()) == model.num_slots(length) == math.ceil(length / ratio)
        assert out.slots[row][~out.mask[row]].abs().max() == 0 if (~out.mask[row]).any() else True
        assert torch.isfinite(out.slots).all()


def test_ratio_not_dividing_window():
    model = make(ComprExITConfig(ratio=3, window=32))  # K = 11 slots, the last field holds 2 tokens
    hidden, mask = inputs(batch=1, tokens=64, lengths=[64])
    out = model(hidden, mask)
    assert out.slots.shape[1] == 22 and bool(out.mask.all())


def test_gradients_reach_every_compressor_parameter():
    model = make()
    hidden, mask = inputs()
    out = model(hidden, mask)
    (out.slots.pow(2).sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def plain_reference(model: ComprExIT, hidden, mask):
    """Straight transcription of METHOD.md: every layer projected, every window looped over."""
    depth, width, config = model.depth, model.width, model.config
    h = rms_normalize(hidden) if config.normalize_layers else hidden
    prior = torch.softmax(depth.layer_prior, 0)
    c = (h * prior[None, None, :, None]).sum(2)
    q = depth.query(c)
    k = depth.key(h) + depth.layer_embedding
    v = depth.value(h)
    a = torch.softmax((k * q[:, :, None]).sum(-1) / (math.sqrt(config.gate_dim) * config.depth_temperature), -1)
    anchors = (a[..., None] * v).sum(2)
    batch, tokens, _ = anchors.shape
    K, r, W = config.slots_per_window, config.ratio, config.window
    rows = []
    for b in range(batch):
        slots = []
        for start in range(0, tokens, W):
            A = anchors[b, start : start + W]
            m = mask[b, start : start + W]
            E = hidden[b, start : start + W, 0][m]  # the tokens' input embeddings, for the embedding skip
            A, m = A[m], None
            n = len(A)
            if n == 0:
                slots.extend([torch.zeros(anchors.shape[-1])] * K)
                continue
            receivers = [A[k * r : k * r + r].mean(0) for k in range(K) if k * r < n]
            R = torch.stack(receivers)
            phi = lambda x: F.normalize(width.metric(width.metric_norm(x)), dim=-1)  # noqa: E731
            cost = 1 - phi(A) @ phi(R).T
            rho = torch.softmax(width.capacity(width.capacity_norm(A)).squeeze(-1) / config.capacity_temperature, 0)
            rho = (1 - config.capacity_floor) * rho + config.capacity_floor / n
            plan = torch.exp(-cost.double() / config.sinkhorn_epsilon)
            u, v_ = torch.ones(n, dtype=torch.double), torch.ones(len(R), dtype=torch.double)
            for _ in range(config.sinkhorn_iterations):
                u = rho.double() / (plan @ v_)
                v_ = (1 / len(R)) / (plan.T @ u)
            plan = (u[:, None] * plan * v_[None, :]).float()
            G = width.value(width.value_norm(A))
            Z = plan.T @ G * len(R)
            Z = model.projector(Z)
            if config.embedding_skip:
                Z = Z + plan.T @ E * len(R)
            slots.extend(list(Z) + [torch.zeros(anchors.shape[-1])] * (K - len(R)))
        rows.append(torch.stack(slots))
    return torch.stack(rows)


@pytest.mark.parametrize("normalize,skip", [(True, False), (False, False), (True, True)])
def test_optimised_compressor_equals_plain_reference(normalize, skip):
    """Tolerance 1e-4 relative: float32 arithmetic in a different order plus float64 Sinkhorn."""
    model = make(ComprExITConfig(window=32, normalize_layers=normalize, embedding_skip=skip))
    with torch.no_grad():  # the skip's zero-initialised output layer would hide the projector
        model.projector.net[2].weight.normal_(0, 0.05)
    hidden, mask = inputs(batch=2, tokens=70, lengths=[70, 41])
    if skip:
        hidden[:, :, 0] = hidden[:, :, 0] / hidden[:, :, 0].norm(dim=-1, keepdim=True) * 5
    if not normalize:
        hidden = hidden / hidden.norm(dim=-1, keepdim=True)  # raw Gemma-scale states overflow the plain form
    fast = model(hidden, mask).slots
    with torch.no_grad():
        ref = plain_reference(model, hidden, mask)
    assert (fast - ref).norm() / ref.norm() < 1e-4


def test_untrained_embedding_skip_emits_plan_weighted_token_embeddings():
    """With the skip, a fresh compressor hands the decoder pooled input embeddings it can already read."""
    model = make(ComprExITConfig(window=32, embedding_skip=True))
    hidden, mask = inputs(batch=1, tokens=32, lengths=[32])
    out = model(hidden, mask)
    anchors, _ = model.depth(hidden, mask)
    plan = model.width(anchors, mask).plan
    expected = plan[0, 0].T @ hidden[0, :, 0] * model.config.slots_per_window
    torch.testing.assert_close(out.slots[0], expected, rtol=1e-4, atol=1e-4)
    assert model.projector.net[2].weight.abs().sum() == 0
    out.slots.pow(2).sum().backward()
    assert model.projector.net[2].weight.grad.abs().sum() > 0
    assert model.width.metric.weight.grad.abs().sum() > 0  # the plan learns through the skip from step one


def test_single_layer_selection_and_range_check():
    model = make(ComprExITConfig(window=32, layers=(2,)))
    hidden, mask = inputs()
    assert model(hidden, mask).slots.shape[1] == 16  # 50 tokens: 2 windows of 8 slots
    with pytest.raises(ConfigError, match="out of range"):
        ComprExIT(ComprExITConfig(layers=(9,)), IDENTITY)


def test_slot_scale_matches_embedding_rms():
    model = ComprExIT(ComprExITConfig(window=32, slot_scale="embedding"), IDENTITY, embedding_rms=25.0)
    hidden, mask = inputs()
    out = model(hidden, mask)
    rms = out.slots[out.mask].pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 25.0), rtol=1e-3, atol=1e-3)


def test_bf16_autocast_forward_is_finite():
    model = make()
    hidden, mask = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(hidden.bfloat16(), mask)
    assert out.slots.dtype == torch.float32 and torch.isfinite(out.slots).all()


def test_parameter_count_share_for_gemma_3_270m_shape():
    gemma = BackboneIdentity("gemma-3-270m", "gemma3_text", 640, 18, 262144)
    params = ComprExIT(ComprExITConfig(), gemma).parameter_count()
    assert 0.005 < params / 268_098_176 < 0.015  # ~1% of the backbone (METHOD.md)
