"""The `faisca` command as a user runs it."""

from __future__ import annotations

import shlex
import subprocess
import sys


def faisca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faisca.cli.main", *args], capture_output=True, text=True, timeout=60)


def test_models_prints_a_table_of_cards() -> None:
    result = faisca("models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "VERSION"]
    table = "\n".join(lines)
    for model_id in ("google-gemma-3-270m", "huggingfacetb-smollm2-135m-instruct",
                     "ista-daslab-gemma-3-27b-it-gptq-4b-128g", "casperhansen-mistral-small-24b-instruct-2501-awq"):
        assert model_id in table
    assert "not configured" in table and "embedded" in table


def test_show_prints_one_card() -> None:
    result = faisca("show", "ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g")
    assert result.returncode == 0
    assert "131072 tokens" in result.stdout and "text+image" in result.stdout


def test_show_schema_prints_json() -> None:
    result = faisca("show", "gemma3:270m", "--schema")
    assert result.returncode == 0 and '"$schema"' in result.stdout


def test_show_vllm_prints_the_command_that_serves_the_card_on_gpus() -> None:
    result = faisca("show", "mistral-small:24b", "--vllm", "--tensor-parallel-size", "2")
    assert result.returncode == 0
    assert shlex.split(result.stdout)[:3] == ["vllm", "serve", "casperhansen/mistral-small-24b-instruct-2501-awq"]
    assert "--tensor-parallel-size 2" in result.stdout and "--tool-call-parser mistral" in result.stdout


def test_unknown_model_is_one_clear_line() -> None:
    result = faisca("show", "no-such-model")
    assert result.returncode == 2
    assert result.stderr.startswith("faisca: ") and "Traceback" not in result.stderr


def test_serving_a_model_without_weights_fails_fast_and_clearly() -> None:
    result = faisca("serve", "--model", "gemma3:27b", "--port", "1")
    assert result.returncode == 2
    assert "--weights" in result.stderr and "Traceback" not in result.stderr


def test_help_texts() -> None:
    assert "--ctx-size" in faisca("serve", "--help").stdout
    assert "serve" in faisca("--help").stdout


def test_bad_numbers_are_usage_errors() -> None:
    result = faisca("serve", "--max-num-seqs", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr and "Traceback" not in result.stderr
    result = faisca("serve", "--allow-image-network", "192.168.1.0/33")
    assert result.returncode == 2 and "192.168.1.0/24" in result.stderr and "Traceback" not in result.stderr


def test_local_gguf_mistakes_are_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    for args, why in [
        (("--mmproj", str(not_gguf)), "--mmproj and --name go with --gguf FILE"),
        (("--gguf", str(tmp_path / "missing.gguf")), "is not a file"),
        (("--gguf", str(not_gguf)), "is not a GGUF model llama.cpp can load"),
        (("--gguf", str(not_gguf), "--mmproj", str(tmp_path / "missing-mmproj.gguf")), "--mmproj"),
    ]:
        result = faisca("serve", "--port", "1", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("faisca: ") and why in result.stderr and "Traceback" not in result.stderr
    assert "--mmproj" in faisca("serve", "--help").stdout
