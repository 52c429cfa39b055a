"""The shared test matrix of methods: every registered method on tiny random Llama and Gemma3 backbones.

For each method: prefixes of the right shape, evaluation through the common runner; for each
trainable one also: one training step lowers the loss and never touches the backbone, and a
save/load round trip gives identical prefixes. Then what is specific to the baselines (LoRA
off in the decoder, the key/value prefix layout, ablation names) and their one-line errors.
"""

import pytest
import torch

from comprexit import CheckpointError, ComprExIT, ComprExITConfig, ConfigError, InputError
from comprexit.data.qa import load_mrqa
from comprexit.decoding import EagerDecoder
from comprexit.evaluation.runner import EvalSettings, evaluate
from comprexit.methods import available_methods, create_method
from comprexit.methods.trainable import ContextBatch, encoder_class, load_encoder, trainable_methods
from comprexit.prefix import KVPrefix, KVPrefixBatch, SoftPrefix
from comprexit.training.data import Example
from comprexit.training.objectives import AutoencodeMarker, LossWeights, batch_losses, combined_loss, decoder_hidden, kv_decoder_hidden

from tiny import cli, tiny_backbone

# small configs of every trainable method (fast on a CPU)
CONFIGS = {
    "comprexit": dict(window=16),
    "icae": dict(lora_rank=4, max_context_tokens=64),
    "500x": dict(lora_rank=4, max_context_tokens=64),
    "prompt-tuning": dict(virtual_tokens=4),
    "beacon": dict(window=8, max_context_tokens=64),  # 36 tokens: 5 windows, beyond Gemma's 16-entry sliding window
}
CONTEXTS = [list(range(4, 40)), list(range(4, 11))]  # 36 and 7 tokens: 9 and 2 positions at 4x
POSITIONS = {
    "zero-shot": [36, 7], "no-context": [0, 0], "comprexit": [9, 2], "icae": [9, 2], "500x": [9, 2],
    "prompt-tuning": [4 + 36, 4 + 7], "beacon": [9, 2], "truncate-last": [9, 2], "truncate-first": [9, 2], "mean-pool": [9, 2],
}
EXAMPLES = [Example(tuple(range(5, 40)), tuple(range(40, 52))), Example(tuple(range(50, 70)), tuple(range(20, 30)), 4)]


def fresh_encoder(name, backbone, seed=0, **changes):
    cls = encoder_class(name)
    torch.manual_seed(seed)
    return cls.for_backbone(backbone, cls.config_class.from_dict({**CONFIGS[name], **changes}))


def build(name, backbone):
    if name in CONFIGS:
        return create_method(name, backbone, encoder=fresh_encoder(name, backbone))
    return create_method(name, backbone)


def perturb(encoder, seed=1):
    """Move every trainable tensor off its initial value (LoRA's B starts at zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_the_matrix_covers_every_registered_method():
    # llmlingua keeps *at most* the budget of tokens and needs an optional package: tests/test_llmlingua.py
    assert set(available_methods()) - {"llmlingua"} == set(POSITIONS)
    assert set(trainable_methods()) == set(CONFIGS)


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_prefix_shapes(name, tiny):
    prefix = build(name, tiny).prepare(CONTEXTS)
    assert prefix.positions() == POSITIONS[name]
    for entry, n, context in zip(prefix.rows, POSITIONS[name], CONTEXTS):
        if isinstance(entry, KVPrefix):
            heads, dim = tiny.config.num_key_value_heads, tiny.config.head_dim
            assert len(entry.keys) == len(entry.values) == tiny.identity.num_layers
            assert all(t.shape == (heads, n, dim) for t in (*entry.keys, *entry.values))
            assert entry.next_position == len(tiny.bos_ids) + len(context) + n
        else:
            assert entry.embeds.shape == (n, tiny.hidden_size) and torch.isfinite(entry.embeds).all()


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_every_method_runs_through_the_shared_runner(name, qa_path, tiny):
    results = evaluate(build(name, tiny), {"toy": load_mrqa(qa_path)}, EvalSettings(context_budget=40, batch_size=4),
                       keep_predictions=True, show_progress=False)
    toy = results["datasets"]["toy"]
    assert toy["count"] == 12 and 0 <= toy["f1"] <= 100 and len(results["predictions"]["toy"]) == 12
    assert toy["contexts_cut"] == sum(len(f"Box {i} holds a blue ball. ") * (i + 1) > 40 for i in range(6))
    assert results["method"]["method"] == name
    if name in CONFIGS:
        assert results["method"]["trainable_parameters"] > 0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_training_step_lowers_the_loss_and_leaves_the_backbone(name, tiny):
    encoder = fresh_encoder(name, tiny).train()
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    weights = LossWeights(1.0, 0.5, 0.5 if "ae" in encoder.objectives else 0.0)
    marker = AutoencodeMarker(tiny.hidden_size, tiny.embedding_rms())
    optimizer = torch.optim.Adam([*encoder.parameters(), *marker.parameters()], lr=1e-2)
    first = combined_loss(batch_losses(tiny, encoder, EXAMPLES, weights, marker), weights)
    first.backward()
    assert all(p.grad is not None for p in encoder.parameters())
    assert all(p.grad is None for p in tiny.model.parameters())
    optimizer.step()
    with torch.no_grad():
        second = combined_loss(batch_losses(tiny, encoder, EXAMPLES, weights, marker), weights)
    assert float(second) < float(first.detach())
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_save_load_round_trip_gives_identical_prefixes(name, tiny, tmp_path):
    encoder = fresh_encoder(name, tiny)
    perturb(encoder)
    encoder.save_pretrained(tmp_path / "w")
    loaded = load_encoder(tmp_path / "w", tiny, method=name)
    assert type(loaded) is type(encoder) and loaded.config == encoder.config
    assert set(loaded.state_dict()) == set(encoder.state_dict())  # only the trained tensors are saved
    a = create_method(name, tiny, encoder=encoder).prepare(CONTEXTS).rows
    b = create_method(name, tiny, weights=tmp_path / "w").prepare(CONTEXTS).rows
    for x, y in zip(a, b):
        if isinstance(x, KVPrefix):
            assert x.next_position == y.next_position
            assert all(torch.equal(p, q) for p, q in zip((*x.keys, *x.values), (*y.keys, *y.values)))
        else:
            assert torch.equal(x.embeds, y.embeds)


@pytest.mark.parametrize("name", ["icae", "beacon"])
def test_resume_reproduces_the_uninterrupted_run(name, tmp_path, corpus):
    """Checkpoints hold only the trained tensors, and resuming (adapter dropout included) is exact."""
    import json

    from safetensors.torch import load_file

    from comprexit.training.config import TrainConfig
    from comprexit.training.trainer import Trainer

    def config(run):
        return TrainConfig(phase="ntp", data=[str(corpus)], output_dir=str(tmp_path / run), method=name, lr=3e-3,
                           batch_size=4, context_tokens=48, continuation_tokens=16, compressor=CONFIGS[name],
                           validation_permille=150, val_examples=4, eval_every=100, save_every=3, max_steps=5, log_every=1,
                           warmup_ratio=0.0, kl_weight=1.0)

    backbone = tiny_backbone("llama")
    Trainer(config("a"), backbone=backbone).train()
    Trainer(config("b"), backbone=backbone).train(stop_at_step=3)
    Trainer(config("b"), backbone=backbone, resume=True).train()
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
               if '"train"' in line] for run in "ab"]
    assert losses[0] == losses[1]
    a, b = (load_file(tmp_path / run / "final" / "comprexit.safetensors") for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_file(tmp_path / "b" / "checkpoints" / "step-0000005" / "trainable.safetensors")
    assert sum(t.numel() for t in saved.values()) == fresh_encoder(name, backbone).parameter_count()


# ---------------------------------------------------------------- ICAE and 500x: LoRA stays in the encoder
def test_icae_decoder_is_the_plain_backbone(tiny):
    from peft.tuners.lora import LoraLayer

    encoder = fresh_encoder("icae", tiny)
    perturb(encoder)
    assert not any(isinstance(m, LoraLayer) for m in tiny.model.modules())  # the decoder holds no adapter
    ids = torch.tensor([tiny.bos_ids + list(range(5, 30))])
    plain = tiny.model(input_ids=ids).logits
    with encoder.lora_model.disable_adapter():
        off = encoder.lora_model(input_ids=ids).logits
    on = encoder.lora_model(input_ids=ids).logits
    assert torch.equal(off, plain)  # adapters disabled = the frozen backbone, weight for weight
    assert not torch.allclose(on, plain)
    lora_params = sum(p.numel() for n, p in encoder.named_parameters() if n.startswith("adapters."))
    assert lora_params == sum(p.numel() for p in encoder.lora_model.parameters() if p.requires_grad)
    assert encoder.parameter_count() == lora_params + encoder.memory.numel()


# icae: the adapted copy's layers; beacon: its whole encoder pass (Gemma's sliding windows included)
@pytest.mark.parametrize("name, kind, changes", [("icae", "llama", {"lora_dropout": 0.0}), ("beacon", "gemma3", {})])
def test_gradient_checkpointing_gives_the_same_gradients(name, kind, changes):
    backbone = tiny_backbone(kind)
    grads = []
    for checkpointing in (False, True):
        encoder = fresh_encoder(name, backbone, **changes)
        perturb(encoder)
        if checkpointing:
            encoder.enable_gradient_checkpointing()
        encoder.train()
        combined_loss(batch_losses(backbone, encoder, EXAMPLES, LossWeights()), LossWeights()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def frozen_kv(backbone, contexts):
    """The frozen backbone's own cache over `[BOS] + context`: a key/value prefix whose meaning is known."""
    from transformers import DynamicCache

    from comprexit.hf_compat import cache_argument

    rows = []
    for context in contexts:
        cache = DynamicCache()
        backbone.model.base_model(input_ids=torch.tensor([backbone.bos_ids + context]), **cache_argument(cache), use_cache=True)
        rows.append(KVPrefix(tuple(layer.keys[0] for layer in cache.layers), tuple(layer.values[0] for layer in cache.layers),
                             len(backbone.bos_ids) + len(context)))
    return rows


def test_kv_prefix_reads_like_the_full_sequence(tiny):
    """`cache([BOS] + context) + [BOS] + targets` equals reading `[BOS] + context + [BOS] + targets` in full."""
    contexts, targets = [list(range(5, 17)), list(range(30, 35))], [[40, 41, 42, 43], [44, 45]]
    kv = KVPrefixBatch.stack(frozen_kv(tiny, contexts))
    hidden, offsets = kv_decoder_hidden(tiny, kv, targets)
    for row, (context, target) in enumerate(zip(contexts, targets)):
        full, _ = decoder_hidden(tiny, tiny.embed(torch.tensor(context + tiny.bos_ids))[None], [len(context) + 1], [target])
        n = len(tiny.bos_ids + target)
        torch.testing.assert_close(hidden[row, :n], full[0, -n:], rtol=1e-4, atol=1e-5)
    # decoding: a KV prefix answers like the same tokens read as a soft prefix
    prompts = [[20, 21, 22], [23]]
    decoder = EagerDecoder(tiny)
    as_kv = [decoder.answers([p], [q], 6)[0] for p, q in zip(frozen_kv(tiny, contexts), prompts)]
    as_embeds = [decoder.answers([SoftPrefix.of_tokens(tiny, c + tiny.bos_ids)], [q], 6)[0] for c, q in zip(contexts, prompts)]
    assert as_kv == as_embeds
    if tiny.identity.model_type == "llama":  # no sliding window: batching (padding) changes nothing
        assert decoder.answers(frozen_kv(tiny, contexts), prompts, 6) == as_kv
    with pytest.raises(TypeError, match="mixes prefix kinds"):
        decoder.answers([frozen_kv(tiny, contexts)[0], SoftPrefix.of_tokens(tiny, contexts[1])], prompts, 6)


def test_500x_memory_positions_continue_the_context(tiny):
    encoder = fresh_encoder("500x", tiny)
    with torch.no_grad():
        prefix = encoder(ContextBatch([list(range(4, 40)), list(range(4, 11))]))
    assert prefix.lengths == [9, 2] and prefix.next_positions == [1 + 36 + 9, 1 + 7 + 2]
    assert prefix.mask().tolist()[1] == [0] * 7 + [1, 1]
    assert all(float(k[1, :, :7].abs().sum()) == 0 for k in prefix.keys)  # left padding is zero


# ---------------------------------------------------------------- Activation Beacon: windows, beacons, a clean backbone
def streamed_beacons(encoder, context):
    """The reference: window by window, each read after a cache of `[BOS]` and the earlier windows' beacons only,
    whose raw tokens' keys and values are then dropped. Per layer the beacons' keys and values, and the next position."""
    from transformers import DynamicCache

    from comprexit.hf_compat import cache_argument
    from comprexit.methods.beacon import beacon_projections

    backbone, config = encoder.backbone, encoder.config
    model = backbone.model.base_model
    cache = DynamicCache()
    model(input_ids=torch.tensor([backbone.bos_ids]), **cache_argument(cache), use_cache=True)
    kept = [(layer.keys, layer.values) for layer in cache.layers]
    beacons, position = [], 1
    for start in range(0, len(context), config.window):
        tokens = context[start : start + config.window]
        n = -(-len(tokens) // config.ratio)
        embeds = torch.cat([backbone.embed(torch.tensor(tokens)), encoder.beacons[:n]])[None]
        past = kept[0][0].shape[2]
        cache = DynamicCache(ddp_cache_data=kept)  # no model config: sliding layers slide over what is cached
        cols = torch.arange(len(tokens), len(tokens) + n)
        with beacon_projections(encoder.attentions, encoder.projections, torch.zeros_like(cols), cols):
            model(inputs_embeds=embeds, attention_mask=torch.ones(1, past + len(tokens) + n, dtype=torch.long),
                  position_ids=torch.arange(position, position + len(tokens) + n)[None], **cache_argument(cache),
                  use_cache=True)
        new = [(layer.keys[:, :, past + len(tokens) :], layer.values[:, :, past + len(tokens) :]) for layer in cache.layers]
        kept = [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(kept, new)]
        beacons.append(new)
        position += len(tokens) + n
    keys = [torch.cat([window[layer][0] for window in beacons], 2)[0] for layer in range(len(kept))]
    values = [torch.cat([window[layer][1] for window in beacons], 2)[0] for layer in range(len(kept))]
    return keys, values, position


@pytest.mark.parametrize("kind", ["llama", "gemma3", "gemma3-hybrid"])
def test_beacon_one_pass_equals_streaming_the_windows(kind):
    """The block-masked single pass gives exactly the keys and values of streaming window by window (sliding windows
    included: 64 tokens at window 8 make Gemma's 16-entry window bite), and nothing else reaches the decoder."""
    backbone = tiny_backbone(kind)
    encoder = fresh_encoder("beacon", backbone)
    perturb(encoder)
    contexts = [list(range(4, 68)), list(range(4, 11)), list(range(50, 90))]
    with torch.no_grad():
        rows = encoder(ContextBatch(contexts)).rows()
        for row, context in zip(rows, contexts):
            keys, values, next_position = streamed_beacons(encoder, context)
            assert len(row) == -(-len(context) // 4) and row.next_position == next_position
            for got, want in zip((*row.keys, *row.values), (*keys, *values)):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_beacon_windows_compress_and_pass_information_through_beacons(tiny):
    encoder = fresh_encoder("beacon", tiny)  # window 8, ratio 4: 2 beacons a window
    perturb(encoder)
    context = list(range(4, 40))  # 36 tokens: windows of 8, 8, 8, 8, 4 tokens
    with torch.no_grad():
        base = encoder(ContextBatch([context])).rows()[0]
        early = encoder(ContextBatch([[60] + context[1:]])).rows()[0]  # a token of window 1 changed
        late = encoder(ContextBatch([context[:9] + [60] + context[10:]])).rows()[0]  # a token of window 2 changed
    layers = tiny.identity.num_layers
    assert len(base.keys) == len(base.values) == layers
    assert all(k.shape[-2] == 9 for k in (*base.keys, *base.values))  # ceil(36 / 4) positions per layer, no raw token
    for layer in range(1, layers):  # layer 0's keys and values project the beacons' own, context-free, inputs
        # a change in window 2 reaches its own beacons (positions 2, 3), never window 1's
        assert not torch.allclose(late.keys[layer][:, 2:4], base.keys[layer][:, 2:4])
        assert torch.equal(late.keys[layer][:, :2], base.keys[layer][:, :2])
        assert torch.equal(late.values[layer][:, :2], base.values[layer][:, :2])
    for layer in range(2, layers):
        # window 2 reads window 1 only through window 1's beacons, whose keys and values carry window 1 from
        # layer 1 on: window 1's content reaches window 2's beacons one layer later
        assert not torch.allclose(early.keys[layer][:, 2:4], base.keys[layer][:, 2:4])
        assert not torch.allclose(early.values[layer][:, 2:4], base.values[layer][:, 2:4])
    for layer in range(2):
        torch.testing.assert_close(early.keys[layer][:, 2:4], base.keys[layer][:, 2:4])


def test_beacon_leaves_the_backbone_as_it_was(tiny):
    from comprexit.methods.beacon import BeaconProjection, beacon_projections

    encoder = fresh_encoder("beacon", tiny)
    perturb(encoder)
    ids = torch.tensor([tiny.bos_ids + list(range(5, 30))])
    plain = tiny.model(input_ids=ids).logits
    weights = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    projections = [(m.q_proj, m.k_proj, m.v_proj) for m in encoder.attentions]
    encoder.train()
    combined_loss(batch_losses(tiny, encoder, EXAMPLES, LossWeights(1.0, 0.5, 0.0)), LossWeights(1.0, 0.5, 0.0)).backward()
    assert not any(isinstance(m, BeaconProjection) for m in tiny.model.modules())  # wrappers gone after the pass
    assert [(m.q_proj, m.k_proj, m.v_proj) for m in encoder.attentions] == projections  # the very same modules
    assert all(p.grad is None and not p.requires_grad for p in tiny.model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in tiny.model.state_dict().items())
    assert torch.equal(tiny.model(input_ids=ids).logits, plain)  # the plain decoder pass is unchanged
    cols = torch.tensor([3])
    with pytest.raises(RuntimeError, match="boom"):  # removed on an error too
        with beacon_projections(encoder.attentions, encoder.projections, torch.zeros_like(cols), cols):
            assert isinstance(encoder.attentions[0].q_proj, BeaconProjection)
            raise RuntimeError("boom")
    assert [(m.q_proj, m.k_proj, m.v_proj) for m in encoder.attentions] == projections
    # trainable: per layer copies of q, k, v (the last layer's q is never read), plus the beacon vectors
    frozen = sum(p.numel() for m in encoder.attentions for p in (m.q_proj.weight, m.k_proj.weight, m.v_proj.weight))
    last_q = encoder.attentions[-1].q_proj.weight.numel()
    assert encoder.parameter_count() == frozen - last_q + 2 * tiny.hidden_size


def test_beacon_bad_config_and_inputs_are_refused(tiny):
    with pytest.raises(ConfigError, match=r"invalid Activation Beacon config: ratio \(3\) must divide window \(64\)"):
        fresh_encoder("beacon", tiny, window=64, ratio=3)
    with pytest.raises(ConfigError, match="window must be an integer >= 1, got 0"):
        fresh_encoder("beacon", tiny, window=0)
    with pytest.raises(ConfigError, match=r"unknown Activation Beacon config field\(s\) \['stride'\]"):
        fresh_encoder("beacon", tiny, stride=64)
    with pytest.raises(InputError, match="beacon was built for contexts of at most 64 tokens, got 86"):
        build("beacon", tiny).prepare([list(range(4, 90))])
    assert encoder_class("beacon").config_class().to_dict() == {"window": 64, "ratio": 4, "max_context_tokens": 512}


@pytest.mark.slow
def test_beacon_on_the_bundled_gemma(gemma):
    encoder = encoder_class("beacon").for_backbone(gemma)
    assert encoder.parameter_count() == 17_049_600  # 18 layers x (q 640x1024 + k, v 640x256) - last q + 16 x 640
    with torch.no_grad():
        prefix = encoder(ContextBatch([list(range(1000, 1130)), list(range(2000, 2007))]))
    assert prefix.lengths == [33, 2] and prefix.next_positions == [1 + 130 + 33, 1 + 7 + 2]
    assert all(torch.isfinite(k).all() for k in (*prefix.keys, *prefix.values))
    assert not any(type(m).__name__ == "BeaconProjection" for m in gemma.model.modules())


# ---------------------------------------------------------------- ComprExIT's ablations by name
def test_ablations_resolve_against_the_backbone():
    cls = encoder_class("comprexit")
    identity = tiny_backbone("llama").identity  # 3 layers: hidden states 0..3
    build_config = cls.build_config
    assert build_config({}, identity, "wo-allocation").allocation == "attention"
    assert build_config({}, identity, "embedding-only").layers == (0,)
    assert build_config({}, identity, "middle-layer").layers == (2,)
    assert build_config({}, identity, "last-layer").layers == (3,)
    assert build_config({"window": 16}, identity, "last-layer").window == 16
    with pytest.raises(ConfigError, match="sets \\['layers'\\], which the method config sets differently"):
        build_config({"layers": [1]}, identity, "last-layer")
    with pytest.raises(ConfigError, match="has no ablation 'no-transport'.*wo-allocation"):
        build_config({}, identity, "no-transport")
    with pytest.raises(ConfigError, match="method 'icae' has no ablation 'last-layer' \\(it has none\\)"):
        encoder_class("icae").check_ablation("last-layer")


# ---------------------------------------------------------------- errors: one line, no deep traceback
def test_weights_of_another_method_or_backbone_are_refused(tmp_path):
    llama, gemma = tiny_backbone("llama"), tiny_backbone("gemma3")
    fresh_encoder("icae", llama).save_pretrained(tmp_path / "icae")
    ComprExIT.for_backbone(llama, ComprExITConfig(window=16)).save_pretrained(tmp_path / "cx")
    with pytest.raises(CheckpointError, match="are for method 'icae', not '500x'"):
        create_method("500x", llama, weights=tmp_path / "icae")
    with pytest.raises(CheckpointError, match="are for method 'icae', not 'comprexit'"):
        ComprExIT.from_pretrained(tmp_path / "icae", llama)
    with pytest.raises(CheckpointError, match="are for method 'comprexit', not 'prompt-tuning'"):
        create_method("prompt-tuning", llama, weights=tmp_path / "cx")
    with pytest.raises(CheckpointError, match="was trained for backbone tiny-llama"):
        create_method("icae", gemma, weights=tmp_path / "icae")
    assert isinstance(load_encoder(tmp_path / "icae", llama).lora_model, torch.nn.Module)  # the folder names its method


def test_bad_method_options_and_objectives_are_refused(tiny):
    with pytest.raises(ConfigError, match="method 'icae' needs --weights DIR"):
        create_method("icae", tiny)
    with pytest.raises(ConfigError, match="method 'zero-shot' takes no weights option"):
        create_method("zero-shot", tiny, weights="somewhere")
    with pytest.raises(ConfigError, match="ratio must be an integer >= 1"):
        create_method("mean-pool", tiny, ratio=0)
    with pytest.raises(ConfigError, match="method 'truncate-last' has nothing to train; trainable methods: 500x"):
        encoder_class("truncate-last")
    with pytest.raises(ConfigError, match="'prompt-tuning' does not support the ae objective"):
        encoder_class("prompt-tuning").check_objectives({"ce": 1.0, "kl": 0.0, "ae": 0.5})
    with pytest.raises(ConfigError, match="500x reads the key/value cache"):
        fresh_encoder("500x", tiny).enable_gradient_checkpointing()
    with pytest.raises(ConfigError, match="gradient checkpointing does not apply"):
        fresh_encoder("prompt-tuning", tiny).enable_gradient_checkpointing()
    with pytest.raises(ConfigError, match="lora_dropout must be in"):
        fresh_encoder("icae", tiny, lora_dropout=1.5)
    with pytest.raises(ConfigError, match=r"unknown ICAE config field\(s\) \['rank'\]"):
        fresh_encoder("icae", tiny, rank=8)
    with pytest.raises(ConfigError, match="LoRA adapters cannot be placed"):
        fresh_encoder("500x", tiny, lora_targets=["no_such_proj"])
    with pytest.raises(InputError, match="icae was built for contexts of at most 64 tokens"):
        build("icae", tiny).prepare([list(range(4, 90))])


# ---------------------------------------------------------------- the command line, end to end
TRAIN_OPTIONS = ["--max-steps", "2", "--batch-size", "4", "--context-tokens", "48", "--continuation-tokens", "16",
                 "--validation-permille", "150", "--val-examples", "4", "--val-questions", "4", "--eval-every", "2",
                 "--save-every", "100", "--mixed-precision", "no", "--preset", "paper"]
METHOD_OPTIONS = {
    "icae": ["--method-config", '{"lora_rank": 4, "max_context_tokens": 64}', "--gradient-checkpointing"],
    "500x": ["--method-config", '{"lora_rank": 4, "max_context_tokens": 64}', "--ae-weight", "0.5"],
    "prompt-tuning": ["--method-config", '{"virtual_tokens": 4}', "--kl-weight", "1"],
    "comprexit": ["--method-config", '{"window": 16}', "--ablation", "wo-allocation"],
    "beacon": ["--method-config", '{"window": 16, "max_context_tokens": 64}', "--kl-weight", "1", "--gradient-checkpointing"],
}


@pytest.fixture(scope="module")
def backbone_folder(tmp_path_factory):
    from tiny import save_tiny_backbone

    return save_tiny_backbone("llama", tmp_path_factory.mktemp("backbone"))


@pytest.mark.parametrize("name", sorted(METHOD_OPTIONS))
def test_train_both_phases_and_evaluate_from_the_command_line(name, capsys, tmp_path, backbone_folder, corpus, qa_file, qa_path):
    import json

    common = ["--method", name, "--backbone", backbone_folder, *TRAIN_OPTIONS]
    code, out, err = cli(capsys, "train", "ntp", *common, *METHOD_OPTIONS[name], "--data", corpus, "-o", tmp_path / "ntp")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "ntp" / "final" / "comprexit_config.json").read_text())
    assert meta["method"] == name and meta["parameters"] == summary["trainable_parameters"] > 0
    if name == "comprexit":
        assert meta["config"]["allocation"] == "attention"
    code, _, err = cli(capsys, "train", "sft", *common, "--init", tmp_path / "ntp" / "final", "--data", qa_file,
                       "-o", tmp_path / "sft")
    assert code == 0, err
    validation = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert any(row["kind"] == "validation" and "f1" in row for row in validation)
    code, out, err = cli(capsys, "eval", "--method", name, "--weights", tmp_path / "sft" / "best", "--backbone",
                         backbone_folder, "--data", qa_path, "--limit", "4", "--context-budget", "48", "--device", "cpu",
                         "--no-progress", "-o", tmp_path / "eval.json")
    assert code == 0, err
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["method"]["method"] == name and results["method"]["trainable_parameters"] == meta["parameters"]
    assert results["datasets"]["toy_eval"]["count"] == 4
    # the eval records what training the weights cost, both phases, first one first
    assert [(p["phase"], p["steps"]) for p in results["training"]] == [("ntp", summary["step"]), ("sft", 2)]
    assert all(p["train_seconds"] >= 0 and p["device"] for p in results["training"])  # tiny runs round to 0.0 s


@pytest.mark.parametrize("name", ["truncate-last", "truncate-first", "mean-pool"])
def test_training_free_baselines_from_the_command_line(name, capsys, tmp_path, backbone_folder, qa_path):
    import json

    code, _, err = cli(capsys, "eval", "--method", name, "--ratio", "2", "--backbone", backbone_folder, "--data", qa_path,
                       "--limit", "4", "--device", "cpu", "--no-progress", "-o", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["method"] == {"method": name, "ratio": 2}


def one_line_error(code, err, pattern):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def test_command_line_errors_are_one_line(capsys, tmp_path, backbone_folder, corpus, qa_path):
    ComprExIT.for_backbone(tiny_backbone("llama"), ComprExITConfig(window=16)).save_pretrained(tmp_path / "cx")
    code, _, err = cli(capsys, "eval", "--method", "icae", "--weights", tmp_path / "cx", "--backbone", backbone_folder,
                       "--data", qa_path, "--device", "cpu")
    one_line_error(code, err, "are for method 'comprexit', not 'icae'")
    code, _, err = cli(capsys, "eval", "--method", "zero-shot", "--ratio", "4", "--backbone", backbone_folder,
                       "--data", qa_path, "--device", "cpu")
    one_line_error(code, err, "method 'zero-shot' takes no ratio option")
    train = ["train", "ntp", "--backbone", backbone_folder, "--data", corpus, "-o", tmp_path / "run"]
    one_line_error(*cli(capsys, *train, "--method", "truncate-last")[::2], "has nothing to train")
    one_line_error(*cli(capsys, *train, "--method", "icea")[::2], "unknown method 'icea'")
    one_line_error(*cli(capsys, *train, "--method", "icae", "--ablation", "last-layer")[::2], "has no ablation")
    one_line_error(*cli(capsys, *train, "--method", "prompt-tuning", "--ae-weight", "1")[::2], "does not support the ae objective")
    one_line_error(*cli(capsys, *train, "--method", "icae", "--init", tmp_path / "cx", "--max-steps", "1")[::2],
                   "are for method 'comprexit', not 'icae'")
    one_line_error(*cli(capsys, *train, "--method", "icae", "--context-tokens", "600")[::2], "at most 512 tokens")
    assert not (tmp_path / "run" / "final").exists()
