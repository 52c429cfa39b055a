"""The one layout of every sequence the model reads (assembly.py), checked against rows built one by one."""

import pytest
import torch

from comprexit.assembly import LEFT, Tokens, Vectors, assemble


def test_left_and_right_layouts_hold_the_rows_as_written(tiny):
    """`[BOS] + prefix_i + marker + prompt_i`: each row's real part, its mask, positions and segment starts."""
    torch.manual_seed(0)
    prefix = torch.randn(3, 4, tiny.hidden_size, requires_grad=True)
    marker = torch.randn(tiny.hidden_size)
    lengths, prompts, starts = [4, 0, 2], [[7, 8], [9, 10, 11, 12], []], [0, 5, 2]
    segments = (Tokens([tiny.bos_ids] * 3), Vectors(prefix, lengths), Vectors(marker[None], [1] * 3), Tokens(prompts))
    right, left = assemble(tiny, *segments), assemble(tiny, *segments, side=LEFT, start=starts)
    right_embeds, left_embeds = right.embeds(), left.embeds()
    width = right.width
    assert left.width == width == max(1 + n + 1 + len(p) for n, p in zip(lengths, prompts))
    for i, (n, prompt, start) in enumerate(zip(lengths, prompts, starts)):
        row = torch.cat([tiny.embed(torch.tensor(tiny.bos_ids)), prefix[i, :n], marker[None],
                         tiny.embed(torch.tensor(prompt, dtype=torch.long))])
        real, pad = len(row), width - len(row)
        assert torch.equal(right_embeds[i, :real], row) and not right_embeds[i, real:].any()
        assert torch.equal(left_embeds[i, pad:], row) and not left_embeds[i, :pad].any()
        assert right.attention_mask[i].tolist() == [1] * real + [0] * pad
        assert left.attention_mask[i].tolist() == [0] * pad + [1] * real
        assert right.position_ids[i].tolist() == list(range(real)) + [0] * pad
        assert left.position_ids[i].tolist() == [0] * pad + list(range(start, start + real))
        assert right.starts[3][i] == real - len(prompt) and left.starts[3][i] == width - len(prompt)
        assert right.input_ids[i, right.starts[3][i] : real].tolist() == prompt
    right_embeds.sum().backward()  # gradients reach the real prefix vectors only
    assert torch.equal(prefix.grad.abs().sum(-1) > 0, torch.arange(4)[None, :] < torch.tensor(lengths)[:, None])


def test_token_rows_after_a_cache(tiny):
    """Prompts read after a cache: ids only, positions continuing the cache, the cached mask in front."""
    inputs = assemble(tiny, Tokens([[5, 6, 7], [8]]), side=LEFT, start=[10, 4])
    assert inputs.input_ids.tolist() == [[5, 6, 7], [tiny.pad_token_id] * 2 + [8]]
    assert inputs.position_ids.tolist() == [[10, 11, 12], [0, 0, 4]]
    cached = torch.tensor([[1, 1, 0, 1]])
    assert inputs.attention_after(cached).tolist() == [[1, 1, 0, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0, 1]]


def test_bad_layouts_are_refused(tiny):
    with pytest.raises(ValueError, match="side must be"):
        assemble(tiny, Tokens([[5]]), side="up")
    with pytest.raises(ValueError, match="same rows"):
        assemble(tiny, Tokens([[5]]), Tokens([[6], [7]]))
    with pytest.raises(ValueError, match=r"\(batch, P, hidden\) or \(P, hidden\)"):
        Vectors(torch.zeros(4), [1])
