"""Model catalog: every file validates, strict schema, derived counts vs published figures, closed forms."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from simulator.data import profiles_dir
from simulator.errors import InputError
from simulator.models import ModelSpec, list_models, load_model, load_model_file, model_ids

MODEL_FILES = sorted((profiles_dir() / "models").glob("*.yaml"))
BILLION = 1e9

# Published (total, active) parameter counts in billions, kept here independently of the data files.
# llama2-70b: Meta calls it 70B; the checkpoint holds ~68.98B. deepseek-r1: 671B excludes the 14B MTP module.
# gpt-oss-120b: OpenAI's 5.1B active counts the unembedding but not the input embedding.
PUBLISHED_B = {
    "llama2-70b": (69.0, 69.0),
    "llama3.1-8b": (8.03, 8.03),
    "llama3.1-405b": (405.8, 405.8),
    "mixtral-8x7b": (46.7, 12.9),
    "gpt-oss-120b": (116.8, 5.1),
    "deepseek-r1": (671.0, 37.0),
    "qwen3-vl-235b-a22b": (235.0, 22.0),
}
TOLERANCE_FRAC = 0.02


def _raw(model_id: str) -> dict:
    return yaml.safe_load((profiles_dir() / "models" / f"{model_id}.yaml").read_text())


def _write(tmp_path: Path, data: dict, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_catalog_holds_the_mlperf_models() -> None:
    assert set(model_ids()) == set(PUBLISHED_B)
    assert [m.id for m in list_models()] == model_ids()


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_model_file_validates(path: Path) -> None:
    spec = load_model_file(path)
    assert spec.id == path.stem
    assert spec.source and spec.counts_note
    assert spec.mlperf_benchmark in spec.mlperf_benchmark_names[0]
    assert spec.family in ("dense", "moe") and spec.attention in ("gqa", "mla")


def test_unknown_top_level_key_rejected(tmp_path: Path) -> None:
    data = _raw("llama2-70b") | {"num_layer": 80}
    with pytest.raises(InputError, match="num_layer") as info:
        load_model_file(_write(tmp_path, data))
    assert "\n" not in str(info.value)


def test_unknown_nested_key_rejected(tmp_path: Path) -> None:
    data = _raw("mixtral-8x7b")
    data["moe"] = data["moe"] | {"top_k": 2}
    with pytest.raises(InputError, match=r"moe\.top_k"):
        load_model_file(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"family": "moe"}, "moe"),  # moe family without a moe block
        ({"head_dim": None}, "head_dim"),
        ({"num_kv_heads": 7}, "num_kv_heads"),
    ],
)
def test_bad_values_give_one_line_input_error(tmp_path: Path, change: dict, field: str) -> None:
    data = _raw("llama2-70b") | change
    with pytest.raises(InputError, match=field) as info:
        load_model_file(_write(tmp_path, data))
    assert "\n" not in str(info.value) and "custom.yaml" in str(info.value)


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: [unclosed\n")
    with pytest.raises(InputError, match=r"broken\.yaml"):
        load_model_file(path)
    with pytest.raises(InputError, match="cannot read"):
        load_model_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize("model_id", sorted(PUBLISHED_B))
def test_total_params_match_published(model_id: str) -> None:
    spec = load_model(model_id)
    total_b, _ = PUBLISHED_B[model_id]
    assert spec.published_total_params_b == pytest.approx(total_b)
    assert spec.total_params / BILLION == pytest.approx(total_b, rel=TOLERANCE_FRAC)


@pytest.mark.parametrize("model_id", sorted(PUBLISHED_B))
def test_active_params_match_published(model_id: str) -> None:
    spec = load_model(model_id)
    _, active_b = PUBLISHED_B[model_id]
    assert spec.published_active_params_b == pytest.approx(active_b)
    derived = spec.active_params
    if not spec.published_active_counts_input_embedding:
        derived -= spec.embedding_params
    assert derived / BILLION == pytest.approx(active_b, rel=TOLERANCE_FRAC)


def test_llama2_70b_is_68_98b_not_70b() -> None:
    # 80 * (attention 150,994,944 + MLP 704,643,072 + norms 16,384) + 2 * 32000 * 8192 + 8192
    assert load_model("llama2-70b").total_params == 68_976_648_192


@pytest.mark.parametrize(
    ("model_id", "per_layer"),
    [
        # q, k, v, o + q/k/v/o biases (4096 + 512 + 512 + 2880) + 64 sinks
        ("gpt-oss-120b", 2 * 2880 * 4096 + 2 * 2880 * 512 + 8000 + 64),
        # q_a + q_a_norm + q_b + kv_a (latent + rope) + kv_a_norm + kv_b + o
        ("deepseek-r1", 7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
         + 128 * 128 * 7168),
        # q, k, v, o + per-head q/k RMSNorm
        ("qwen3-vl-235b-a22b", 2 * 4096 * 8192 + 2 * 4096 * 512 + 2 * 128),
    ],
)
def test_attention_params_closed_form(model_id: str, per_layer: int) -> None:
    spec = load_model(model_id)
    assert spec.attention_params == spec.num_layers * per_layer


def test_deepseek_mtp_excluded_but_reported() -> None:
    spec = load_model("deepseek-r1")
    assert "MTP" in spec.counts_note
    # the Hugging Face checkpoint (main model + MTP module) holds ~685B
    assert (spec.total_params + spec.mtp_params) / BILLION == pytest.approx(685.0, rel=0.01)
    assert all(m.mtp_params == 0 for m in list_models() if m.id != "deepseek-r1")


@pytest.mark.parametrize("spec", list_models(), ids=lambda m: m.id)
def test_count_identities(spec: ModelSpec) -> None:
    routed_all = spec.num_moe_layers * spec.num_experts * spec.expert_params
    input_table = 0.0 if spec.tie_word_embeddings else spec.embedding_params
    assert spec.dense_params + routed_all + input_table == pytest.approx(spec.total_params, rel=1e-12)
    unused = spec.num_moe_layers * (spec.num_experts - spec.experts_per_token) * spec.expert_params
    assert spec.active_params == pytest.approx(spec.total_params - unused, rel=1e-12)
    assert 0 < spec.attention_params < spec.dense_params <= spec.active_params <= spec.total_params
    assert spec.gemm_flops_per_token == pytest.approx(2 * (spec.active_params - input_table), rel=1e-12)
    assert spec.lm_head_params == spec.embedding_params == spec.vocab_size * spec.hidden_size


def test_gpt_oss_expert_is_three_2880_square_projections() -> None:
    spec = load_model("gpt-oss-120b")
    assert spec.expert_params == pytest.approx(3 * 2880 * 2880, rel=1e-3)  # + biases
    assert spec.num_moe_layers == 36 and spec.num_sliding_layers == 18 and spec.sliding_window_tokens == 128


def test_llama2_70b_kv_per_token() -> None:
    spec = load_model("llama2-70b")
    assert spec.kv_elements_per_token_full == 80 * 2 * 8 * 128 == 163_840
    assert spec.kv_elements_per_token_sliding == 0
    assert spec.kv_elements_for_context(1000) == 163_840 * 1000


def test_deepseek_mla_kv_and_attention_flops() -> None:
    spec = load_model("deepseek-r1")
    assert spec.attention == "mla" and spec.kv_lora_rank == 512
    assert spec.kv_elements_per_token_full == 61 * 576
    assert spec.attention_flops_per_query_key_full == 61 * (2 * 128 * 576 + 2 * 128 * 512)
    assert spec.num_moe_layers == 58 and spec.num_shared_experts == 1


def test_gpt_oss_sliding_window_kv() -> None:
    spec = load_model("gpt-oss-120b")
    full, sliding = spec.kv_elements_per_token_full, spec.kv_elements_per_token_sliding
    assert full == sliding == 18 * 2 * 8 * 64
    kv = spec.kv_elements_for_context(4096)
    assert kv < 4096 * (full + sliding)
    assert kv == full * 4096 + sliding * 128
    assert spec.kv_elements_for_context(100) == 100 * (full + sliding)  # inside the window
    flops = spec.attention_flops_for_context(4096)
    per_key_full, per_key_sliding = (spec.attention_flops_per_query_key_full,
                                     spec.attention_flops_per_query_key_sliding)
    assert flops == per_key_full * 4096 + per_key_sliding * 128


@pytest.mark.parametrize("spec", [m for m in list_models() if m.attention == "gqa"], ids=lambda m: m.id)
def test_gqa_attention_flops_closed_form(spec: ModelSpec) -> None:
    full_layers = spec.num_layers - spec.num_sliding_layers
    assert spec.attention_flops_per_query_key_full == full_layers * 4 * spec.num_heads * spec.head_dim
    assert spec.kv_elements_per_token_full == full_layers * 2 * spec.num_kv_heads * spec.head_dim


@pytest.mark.parametrize("spec", [m for m in list_models() if m.family == "moe"], ids=lambda m: m.id)
def test_expected_distinct_experts(spec: ModelSpec) -> None:
    e, k = spec.num_experts, spec.experts_per_token
    assert spec.expected_distinct_experts(0) == 0
    assert spec.expected_distinct_experts(1) == pytest.approx(k)
    values = [spec.expected_distinct_experts(n) for n in range(1, 2000, 7)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert all(b > a for a, b in itertools.pairwise(values) if a < e * (1 - 1e-12))
    assert all(k <= v <= e for v in values)
    assert spec.expected_distinct_experts(100_000) == pytest.approx(e, rel=1e-9)


@pytest.mark.parametrize("spec", [m for m in list_models() if m.family == "dense"], ids=lambda m: m.id)
def test_dense_models_have_no_experts(spec: ModelSpec) -> None:
    assert spec.num_experts == spec.experts_per_token == spec.num_moe_layers == 0
    assert spec.expert_params == 0 and spec.active_params == spec.total_params
    assert spec.expected_distinct_experts(1000) == 0


def test_kv_heads_per_gpu() -> None:
    llama = load_model("llama2-70b")
    assert [llama.kv_heads_per_gpu(tp) for tp in (1, 2, 8, 16)] == [8, 4, 1, 1]
    assert llama.kv_per_gpu_frac(16) == 1 / 8  # replicated heads: each rank still holds one
    deepseek = load_model("deepseek-r1")
    assert deepseek.kv_heads_per_gpu(8) == 1 and deepseek.kv_per_gpu_frac(8) == 1
    with pytest.raises(InputError):
        llama.kv_heads_per_gpu(0)


def test_routing_everything_makes_active_equal_total(tmp_path: Path) -> None:
    data = _raw("mixtral-8x7b")
    data["moe"] = data["moe"] | {"experts_per_token": 8}
    spec = load_model_file(_write(tmp_path, data))
    assert spec.active_params == spec.total_params
    assert spec.active_params > load_model("mixtral-8x7b").active_params


def test_load_model_is_case_insensitive() -> None:
    assert load_model("Llama2-70B") is load_model("llama2-70b")


def test_unknown_model_lists_valid_ids() -> None:
    with pytest.raises(InputError) as info:
        load_model("llama2-71b")
    message = str(info.value)
    assert "\n" not in message and "llama2-71b" in message
    assert all(model_id in message for model_id in model_ids())
