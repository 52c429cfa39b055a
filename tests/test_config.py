import pytest

from comprexit import ComprExITConfig, ConfigError
from comprexit.decoding import answer_rule, get_answer_rule
from comprexit.prompting import DEFAULT_TEMPLATE, PromptTemplate


def test_defaults_are_the_papers():
    config = ComprExITConfig()
    assert (config.ratio, config.window, config.gate_dim, config.metric_dim) == (4, 128, 256, 256)
    assert (config.depth_temperature, config.capacity_temperature) == (0.7, 1.0)
    assert (config.sinkhorn_epsilon, config.sinkhorn_iterations, config.capacity_floor) == (0.1, 30, 0.05)
    assert config.projector_init_gain == 0.4 and config.slots_per_window == 32


def test_round_trip_through_dict():
    config = ComprExITConfig(ratio=8, layers=(0, 9), slot_scale="embedding")
    assert ComprExITConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ratio", 0, "ratio must be an integer >= 1"),
        ("ratio", 2.5, "ratio must be an integer"),
        ("window", -1, "window must be"),
        ("sinkhorn_epsilon", 0.0, "sinkhorn_epsilon must be a finite number > 0"),
        ("depth_temperature", float("nan"), "depth_temperature must be a finite number"),
        ("capacity_floor", 1.5, r"capacity_floor must be in \[0, 1\]"),
        ("sinkhorn_iterations", True, "sinkhorn_iterations must be an integer"),
        ("slot_scale", "huge", "slot_scale must be one of"),
        ("allocation", "greedy", "allocation must be one of"),
        ("layers", (), "layers must be None or a non-empty list"),
        ("layers", (1, 1), "must not repeat"),
        ("normalize_layers", "yes", "normalize_layers must be true or false"),
    ],
)
def test_out_of_range_fields_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ComprExITConfig(**{field: value})


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        ComprExITConfig(ratio=0, sinkhorn_iterations=0)
    assert "ratio" in str(info.value) and "sinkhorn_iterations" in str(info.value)


def test_ratio_larger_than_window():
    with pytest.raises(ConfigError, match="cannot exceed window"):
        ComprExITConfig(ratio=256, window=128)


def test_unknown_field_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown ComprExIT config field\(s\) \['ratoi'\]"):
        ComprExITConfig.from_dict({"ratoi": 4})


def test_prompt_template():
    assert PromptTemplate().render(" Who? ") == DEFAULT_TEMPLATE.format(question="Who?")
    with pytest.raises(ConfigError, match="exactly one"):
        PromptTemplate("no field")
    with pytest.raises(ConfigError, match="fields other than"):
        PromptTemplate("{question} {other}")


@pytest.mark.parametrize(
    "raw, answer",
    [(" Paris. It is", "Paris"), ("Paris\nNext", "Paris"), ("  1867", "1867"), ("\n Warsaw.", "Warsaw"), ("", "")],
)
def test_the_papers_answer_rule_cuts_at_first_period_or_newline(raw, answer):
    assert get_answer_rule("paper")(raw) == answer


@pytest.mark.parametrize(
    "raw, answer",
    [
        ("Frobnicator 3.14.2", "Frobnicator 3.14.2"),  # a version (the paper's rule: "Frobnicator 3")
        (" version 3.14.2. It was released", "version 3.14.2"),
        ("https://example.org/a.b", "https://example.org/a.b"),  # a URL (the paper's rule: "https://example")
        ("See https://example.org/a.b. Then", "See https://example.org/a.b"),
        ("e.g. the lens", "e.g. the lens"),  # an abbreviation keeps its full stop
        ("Dr. Agnes Mallory. She designed it", "Dr. Agnes Mallory"),
        ("Washington, D.C.", "Washington, D.C."),
        ("J. R. R. Tolkien", "J. R. R. Tolkien"),
        ("3.5 km. The next", "3.5 km"),  # a decimal
        ("write to a.b@example.org today", "write to a.b@example.org today"),  # an e-mail address
        ("Paris. It was...", "Paris"),  # still cut at the end of a sentence
        ("Paris\nNext", "Paris"),
        ("Paris...", "Paris"),
        ("  1867", "1867"),
        ("", ""),
    ],
)
def test_the_sentence_rule_keeps_tokens_with_full_stops_whole(raw, answer):
    assert get_answer_rule("sentence")(raw) == answer


def test_answer_rules_are_named_and_registered_once():
    with pytest.raises(ConfigError, match="unknown answer rule 'nonsense'; known rules: paper, sentence"):
        get_answer_rule("nonsense")
    with pytest.raises(ValueError, match="registered twice"):
        answer_rule("paper")(str.strip)
