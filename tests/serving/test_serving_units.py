"""Pure pieces of the server: flags, task inference, v2 encoding, stop sequences, model sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.cli import build_parser, config_from_args
from serving.config import StorageOptions
from serving.errors import ModelLoadError
from serving.loader import resolve_model
from serving.protocol import encode_v2_output
from serving.tasks import Task, derive_max_model_len, infer_task, parse_task
from serving.textstream import TextStream


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return config_from_args(build_parser().parse_args(list(argv)), {})


def test_booleans_accept_bare_flags_and_true_false_pairs() -> None:
    config = parse("--return_probabilities", "true", "--disable_lower_case", "--trust_remote_code", "false",
                   "--disable-special-tokens=yes")
    assert config.return_probabilities is True
    assert config.disable_lower_case is True
    assert config.trust_remote_code is False
    assert config.disable_special_tokens is True


def test_kserve_defaults_and_aliases() -> None:
    config = parse("--model-name", "sst2", "--max_length", "256", "--task", "Sequence_Classification")
    assert (config.model_name, config.max_model_len, config.task) == ("sst2", 256, Task.sequence_classification)
    assert (config.http_port, config.model_dir, config.backend, config.dtype) == (8080, "/mnt/models", "auto", "auto")
    assert (config.max_batch_size, config.max_batch_wait_ms) == (32, 0.0)
    assert config.source == "/mnt/models"
    assert parse("--model_id", "org/name").source == "org/name"


def test_flag_errors_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--return_probabilities", "--return_raw_logits"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--return_probabilities", "maybe"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--max_batch_size", "0"])


def test_kserve_server_flags_are_accepted_and_ignored() -> None:
    build_parser().parse_args(["--workers", "2", "--grpc_port", "8081", "--enable_grpc", "false"])


def test_openai_route_prefix_follows_kserve_variable() -> None:
    args = build_parser().parse_args([])
    assert config_from_args(args, {}).openai_route_prefix == "/openai"
    assert config_from_args(args, {"KSERVE_OPENAI_ROUTE_PREFIX": ""}).openai_route_prefix == ""
    assert config_from_args(args, {"KSERVE_OPENAI_ROUTE_PREFIX": "llm/"}).openai_route_prefix == "/llm"


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("BertForSequenceClassification", Task.sequence_classification),
        ("DistilBertForTokenClassification", Task.token_classification),
        ("BertForMaskedLM", Task.fill_mask),
        ("LlamaForCausalLM", Task.text_generation),
        ("GPT2LMHeadModel", Task.text_generation),
        ("T5ForConditionalGeneration", Task.text2text_generation),
        ("MarianMTModel", Task.text2text_generation),
    ],
)
def test_task_is_inferred_from_the_architecture(architecture: str, task: Task) -> None:
    assert infer_task([architecture]) is task


def test_task_inference_failures_name_the_problem() -> None:
    with pytest.raises(ModelLoadError, match="Task couldn't be inferred from BertModel"):
        infer_task(["BertModel"])
    with pytest.raises(ModelLoadError, match="Task table_question_answering is not supported"):
        infer_task(["TapasForQuestionAnswering"])
    with pytest.raises(ModelLoadError, match="Unsupported task: summarize"):
        parse_task("summarize")


def test_max_model_len_comes_from_the_config_and_cannot_exceed_it() -> None:
    assert derive_max_model_len({"max_position_embeddings": 512, "n_positions": 1024}, None) == 512
    assert derive_max_model_len({}, None) == 2048
    assert derive_max_model_len({"max_position_embeddings": 512}, 128) == 128
    with pytest.raises(ModelLoadError, match="greater than the derived max_model_len"):
        derive_max_model_len({"max_position_embeddings": 512}, 4096)
    assert derive_max_model_len({"max_position_embeddings": 512}, 4096, allow_long=True) == 4096


@pytest.mark.parametrize(
    ("values", "shape", "datatype", "data"),
    [
        ([1, 0], [2], "INT64", [1, 0]),
        ([[[0, 3, 1]], [[1, 1, 1]]], [2, 1, 3], "INT64", [0, 3, 1, 1, 1, 1]),
        ([[0.5, 1], [2, 3.25]], [2, 2], "FP64", [0.5, 1.0, 2.0, 3.25]),
        (["paris", "france"], [2], "BYTES", ["paris", "france"]),
        ([{0: 0.0094, 1: 0.9906}], [1], "BYTES", ["{0: 0.0094, 1: 0.9906}"]),
        ([[{0: 0.5}, {0: 0.25}]], [1, 2], "BYTES", ["{0: 0.5}", "{0: 0.25}"]),
        ([[1, 2], [3]], [2], "BYTES", ["[1, 2]", "[3]"]),
    ],
)
def test_v2_outputs_take_shape_and_datatype_from_the_result(values, shape, datatype, data) -> None:
    assert encode_v2_output("output-0", values) == {
        "name": "output-0", "shape": shape, "datatype": datatype, "parameters": None, "data": data,
    }


def chars(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def feed(stream: TextStream, text: str) -> list[str]:
    deltas = []
    for char in text:
        if stream.stopped:
            break
        deltas.append(stream.add(ord(char)))
    return [*deltas, stream.finish()]


def test_text_stream_stops_before_the_stop_sequence_and_never_shows_part_of_it() -> None:
    stream = TextStream(chars, stop=["END"])
    deltas = feed(stream, "one EN two END three")
    assert stream.stopped
    assert stream.text == "one EN two "
    assert "".join(deltas) == "one EN two "
    assert "E" not in "".join(deltas[:4])  # "E" was held back while it could start "END"


def test_text_stream_holds_back_incomplete_characters_until_the_end() -> None:
    pieces = {1: "a", 2: "\ufffd"}
    stream = TextStream(lambda ids: "".join(pieces[i] for i in ids))
    assert stream.add(1) == "a"
    assert stream.add(2) == ""
    assert stream.finish() == "\ufffd"


def test_file_uri_and_directory_sources(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    storage = StorageOptions(cache_dir=tmp_path / "cache")
    assert resolve_model(tmp_path.as_uri(), storage=storage).path == tmp_path
    assert resolve_model(str(tmp_path), storage=storage).path == tmp_path
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        resolve_model(str(tmp_path / "empty"), storage=storage)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(f"{tmp_path.as_uri()}/missing", storage=storage)
    with pytest.raises(ModelLoadError, match="invalid Hugging Face model id"):
        resolve_model("hf://too/many/parts", storage=storage)
    with pytest.raises(ModelLoadError, match="no bucket"):
        resolve_model("s3:///key", storage=storage)
