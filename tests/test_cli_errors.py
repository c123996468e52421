"""Every bad input gets the CONTRACT's exit code and one line on stderr that names the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support.testdata import image, model

V2 = str(model("mobilenet_v2_1.0_224_quant"))
EDGETPU = model("mobilenet_v1_0.25_128_quant_edgetpu")


def classify(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_classifier", "classify", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the runtime's own informational banner."""
    return [line for line in done.stderr.splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]


def assert_one_line_error(done, code: int, *names: str) -> str:
    assert done.returncode == code, done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, lines
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("edge-classifier: ")
    for name in names:
        assert name in lines[0]
    return lines[0]


def test_missing_image_is_66_and_others_still_classified(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    done = classify("--model", V2, str(image("parrot.jpg")), missing, str(image("cat.bmp")))
    assert_one_line_error(done, 66, missing, "not found")
    assert [json.loads(line)["image"] for line in done.stdout.splitlines()] == [
        str(image("parrot.jpg")), str(image("cat.bmp"))]


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 10])
def test_unreadable_image_is_65(tmp_path, content):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(content)
    assert_one_line_error(classify("--model", V2, str(bad)), 65, str(bad), "not a readable image")


def test_directory_and_glob_expand_to_images_in_name_order(tmp_path):
    for name in ("b.jpg", "a.bmp"):
        shutil.copy(image("parrot.jpg" if name.endswith("jpg") else "cat.bmp"), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    done = classify("--model", V2, str(tmp_path), str(tmp_path / "*.jpg"))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["image"] for line in done.stdout.splitlines()] == [
        str(tmp_path / "a.bmp"), str(tmp_path / "b.jpg"), str(tmp_path / "b.jpg")]


def test_glob_matching_nothing_is_66(tmp_path):
    pattern = str(tmp_path / "*.png")
    assert_one_line_error(classify("--model", V2, pattern), 66, pattern, "no files match")


def test_missing_model_is_66(tmp_path):
    missing = str(tmp_path / "nope.tflite")
    assert_one_line_error(classify("--model", missing, str(image("cat.bmp"))), 66, missing)


@pytest.mark.parametrize("kind", ["truncated", "not-tflite", "garbage-after-header", "empty"])
def test_corrupt_model_is_65(tmp_path, kind):
    bad = tmp_path / f"{kind}.tflite"
    data = model("mobilenet_v2_1.0_224_quant").read_bytes()
    bad.write_bytes({
        "truncated": data[: len(data) // 3],
        "not-tflite": b"<html>404 not found</html>" * 10,
        "garbage-after-header": data[:8] + b"\x07" * 5000,
        "empty": b"",
    }[kind])
    assert_one_line_error(classify("--model", str(bad), str(image("cat.bmp"))), 65, str(bad))


def test_unresolved_custom_op_is_65_and_names_the_op():
    broken = str(model("model_invoking_error"))
    line = assert_one_line_error(classify("--model", broken, str(image("cat.bmp"))), 65, broken)
    assert "'fake-op-double'" in line


def test_label_count_mismatch_is_65(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a\nb\nc\n")
    line = assert_one_line_error(classify("--model", V2, "--labels", str(short), str(image("cat.bmp"))), 65, str(short))
    assert "3 labels" in line
    assert "1001 outputs" in line


def test_missing_labels_file_is_66(tmp_path):
    missing = str(tmp_path / "labels.txt")
    assert_one_line_error(classify("--model", V2, "--labels", missing, str(image("cat.bmp"))), 66, missing)


def test_edgetpu_model_runs_as_cpu_twin_under_auto():
    done = classify("--accelerator", "auto", "--model", str(EDGETPU), str(image("parrot.jpg")))
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["model"]["accelerator"] == "cpu"
    assert line["model"]["name"] == "mobilenet_v1_0.25_128_quant"
    assert line["top"][0]["id"] == 89
    # The log says which file runs and why.
    assert "running mobilenet_v1_0.25_128_quant.tflite on the CPU" in done.stderr
    assert "libedgetpu.so.1" in done.stderr


def test_edgetpu_model_under_edgetpu_is_69():
    line = assert_one_line_error(classify("--accelerator", "edgetpu", "--model", str(EDGETPU), str(image("cat.bmp"))),
                                 69, str(EDGETPU))
    assert "libedgetpu.so.1" in line
    assert "accelerator" in line


def test_edgetpu_model_without_twin_is_a_clear_69(tmp_path):
    lonely = tmp_path / EDGETPU.name
    shutil.copy(EDGETPU, lonely)
    line = assert_one_line_error(classify("--model", str(lonely), str(image("cat.bmp"))), 69, str(lonely))
    assert "mobilenet_v1_0.25_128_quant.tflite is not beside it" in line


def test_edgetpu_model_under_cpu_uses_twin_without_trying_the_tpu():
    done = classify("--accelerator", "cpu", "--model", str(EDGETPU), str(image("parrot.jpg")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["accelerator"] == "cpu"
    assert "libedgetpu" not in done.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--top-k", "0"], "--top-k"),
    (["--threshold", "1.5"], "--threshold"),
])
def test_bad_options_are_usage_errors(args, needle):
    assert_one_line_error(classify("--model", V2, *args, str(image("cat.bmp"))), 2, needle)


def test_bad_config_is_78_and_names_the_key(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[classify]\ntop_k = 'three'\n")
    line = assert_one_line_error(classify("-c", str(config), "--model", V2, str(image("cat.bmp"))), 78, str(config))
    assert "classify.top_k: must be an integer" in line


def test_missing_config_named_with_c_is_66(tmp_path):
    missing = str(tmp_path / "absent.toml")
    assert_one_line_error(classify("-c", missing, "--model", V2, str(image("cat.bmp"))), 66, missing)


def test_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "nope.tflite")
    done = subprocess.run([sys.executable, "-m", "edge_classifier", "--debug", "classify", "--model", missing,
                           str(image("cat.bmp"))], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 66
    assert "Traceback" in done.stderr
