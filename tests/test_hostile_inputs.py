"""Files are data and inputs are hostile: each hole a probe of ~200 malformed, crafted and unusual
inputs found gets its one line, the exit code the README documents, no traceback, and a stream that
goes on. Every crafted file is built here (section edits with recomputed checksums included)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from wavutil import write_wav

from nim4_edge.runtime.audio import FIFO_WRITER_WAIT_S
from nim4_edge.runtime.hotwords import HotwordDatabase, HotwordEntry, Lexicon
from nim4_edge.runtime.hotwords.database import MAGIC

pytest.importorskip("llama_cpp")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WAV = EXAMPLES / "en_temperature.wav"


def _cli(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nim4_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Exit `code`, no traceback, and a `nim4-edge:` line holding every one of `words`."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nim4-edge: ") and "warning" not in line]
    assert lines and all(w in lines[-1] for w in words), proc.stderr


# --- bundles ---------------------------------------------------------------------------------------------

@pytest.fixture
def bundle(demo_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data = edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "linked.onnx"])
def test_a_manifest_cannot_point_outside_its_folder(bundle, tmp_path, name):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "encoder.onnx", outside)
    if name == "linked.onnx":
        (bundle / name).symlink_to(outside)
    facts = {"bytes": outside.stat().st_size, "sha256": hashlib.sha256(outside.read_bytes()).hexdigest()}

    def point_encoder_outside(data):
        data["files"][name] = facts
        data["encoder"]["variants"]["fp32"] = name
        data["encoder"]["file"] = name
        return data

    _edit_manifest(bundle, point_encoder_outside)
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV)), 2, "outside the bundle folder")


def test_a_listed_file_outside_the_folder_is_refused_without_a_word_about_it(bundle):
    _edit_manifest(bundle, lambda d: d | {"files": {**d["files"], "/etc/shadow": {"bytes": 0, "sha256": "0" * 64}}})
    proc = _cli("doctor", "--bundle", str(bundle))
    assert "outside the bundle folder" in proc.stdout and proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "bytes" not in proc.stdout.split("outside the bundle folder")[0].splitlines()[-1]  # no size of it told


@pytest.mark.parametrize("manifest, message", [
    ("[1, 2, 3]", "re-export"),
    (None, "lacks 'bytes'"),
])
def test_malformed_manifests_are_one_line(bundle, manifest, message):
    if manifest is None:
        _edit_manifest(bundle, lambda d: d | {"files": {k: {"sha256": v["sha256"]} for k, v in d["files"].items()}})
    else:
        (bundle / "manifest.json").write_text(manifest)
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV)), 2, message)


def test_a_scrambled_decoder_is_refused_and_doctor_says_so(bundle):
    gguf = bundle / "decoder-q4_k_m.gguf"  # the cpu profile's variant
    data = bytearray(gguf.read_bytes())
    half = len(data) // 2
    data[half:] = np.random.default_rng(0).integers(0, 256, len(data) - half, dtype=np.uint8).tobytes()
    gguf.write_bytes(bytes(data))  # same size: only the hash can tell
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV)), 2, "sha256 differs", "decoder-q4_k_m.gguf")
    doctor = _cli("doctor", "--bundle", str(bundle))
    assert doctor.returncode == 1 and any(line.startswith("FAIL") and "sha256" in line for line in doctor.stdout.splitlines())


def test_an_int8_encoder_renamed_as_the_fp32_one_is_refused(bundle):
    shutil.copy(bundle / "encoder-int8-dynamic.onnx", bundle / "encoder.onnx")
    size = (bundle / "encoder.onnx").stat().st_size
    _edit_manifest(bundle, lambda d: d | {"files": {**d["files"], "encoder.onnx": {**d["files"]["encoder.onnx"], "bytes": size}}})
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV), "--encoder-precision", "fp32"), 2,
              "sha256 differs", "encoder.onnx")


def test_integrity_is_cached_per_file(bundle, tmp_path):
    env = os.environ | {"NIM4_EDGE_CACHE": str(tmp_path / "cache")}
    first = _cli("listen", "--bundle", str(bundle), "--wav", str(WAV), env=env)
    assert first.returncode == 0, first.stderr
    cache = json.loads((tmp_path / "cache" / "verified-files.json").read_text())
    assert {Path(k).name for k in cache} == {"encoder.onnx", "decoder-q4_k_m.gguf"}  # the files in use
    assert _cli("listen", "--bundle", str(bundle), "--wav", str(WAV), env=env).stdout == first.stdout


# --- hotword databases -------------------------------------------------------------------------------------

def _db(tmp_path) -> Path:
    lexicon = Lexicon()
    words = ["惠新西街", "彗新西街", "彗心大道", "朝阳公园", "NIO House", "Carole Quintero"]
    database = HotwordDatabase.build([(HotwordEntry(w), lexicon.phonemes(w)) for w in words], lexicon, tolerant=True)
    database.save(tmp_path / "hw.db")
    return tmp_path / "hw.db"


def _rewrite_db(path: Path, edit_sections=None, edit_header=None) -> None:
    """Edit a database's base sections and recompute every offset and checksum, as anyone could."""
    data = path.read_bytes()
    n, _ = struct.unpack("<Q8s", data[-16:])
    header = json.loads(data[-16 - n : -16])
    layout = header["segments"][0]["sections"]
    sections = {name: data[w["offset"] : w["offset"] + w["bytes"]] for name, w in layout.items()}
    if edit_sections:
        sections = edit_sections(sections)
    body, new_layout = bytearray(data[: len(MAGIC) + 8]), {}
    for name, chunk in sections.items():
        body += b"\0" * (-len(body) % 8)
        new_layout[name] = {"offset": len(body), "bytes": len(chunk), "crc32": zlib.crc32(chunk),
                            "dtype": layout.get(name, {}).get("dtype", "<i4")}
        body += chunk
    header["segments"][0]["sections"] = new_layout
    if edit_header:
        header = edit_header(header)
    raw = json.dumps(header, ensure_ascii=False).encode()
    path.write_bytes(bytes(body) + raw + struct.pack("<Q8s", len(raw), MAGIC))


def _replace(name, value):
    return lambda sections: sections | {name: value(sections[name]) if callable(value) else value}


EDITS = {
    "entry id out of range": _replace("group_entries", lambda b: np.full(len(b) // 4, 999, "<i4").tobytes()),
    "offsets decreasing": _replace("group_offsets", lambda b: np.frombuffer(b, "<i8")[::-1].copy().tobytes()),
    "syllables cut short": _replace("key_syllables", lambda b: b[:-2]),
    "a NaN weight": _replace("weights", lambda b: np.full(len(b) // 4, np.nan, "<f4").tobytes()),
    "half a value": _replace("weights", lambda b: b[:-1]),
    "a non-phoneme key": _replace("key_ids", lambda b: np.full(len(b) // 2, 9999, "<u2").tobytes()),
    "bad UTF-8 words": _replace("words", lambda b: b"\xff\xfe" + b[2:]),
    "words without their separators": _replace("words", lambda b: b.replace(b"\n", b" ")),
    "key ids out of range": _replace("tolerant1_keys", lambda b: np.full(len(b) // 4, 10**6, "<i4").tobytes()),
    "signatures unsorted": _replace("exact_signatures", lambda b: np.frombuffer(b, "<u8")[::-1].copy().tobytes()),
    "a key length of 0": _replace("exact_lengths", lambda b: np.zeros(len(b) // 4, "<i4").tobytes()),
    "a section that is gone": lambda s: {k: v for k, v in s.items() if k != "group_offsets"},
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_databases_with_recomputed_checksums_are_one_line(tmp_path, edit):
    path = _db(tmp_path)
    _rewrite_db(path, EDITS[edit])
    _one_line(_cli("hotwords", "query", str(path), "--text", "导航到惠新西街", "--tolerant"), 2, "corrupt")


def test_a_miscounting_header_is_corrupt(tmp_path):
    path = _db(tmp_path)
    _rewrite_db(path, edit_header=lambda h: h | {"entries": h["entries"] + 5})
    _one_line(_cli("hotwords", "query", str(path), "--text", "惠新西街"), 2, "corrupt")


def test_signatures_naming_the_wrong_keys_retrieve_nothing_wrong(tmp_path, demo_bundle):
    """Structurally sound but lying values (every signature names another, existing key): nothing
    the file says is trusted without checking, so a query never fails and never returns a name that
    was not heard; `listen` with it decodes every utterance."""
    path = _db(tmp_path)
    _rewrite_db(path, lambda sections: sections | {
        name: np.roll(np.frombuffer(sections[name], "<i4"), 1).tobytes() for name in ("exact_keys", "tolerant1_keys")})
    proc = _cli("hotwords", "query", str(path), "--text", "导航到惠新西街", "--tolerant", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["retrieved"] in ([], ["惠新西街", "彗新西街"])
    two = tmp_path / "two.wav"
    from nim4_edge.runtime.audio import load_audio

    speech = load_audio(EXAMPLES / "zh_navigate.wav", 16000)
    write_wav(two, np.concatenate([speech, np.zeros(16000, np.float32), speech]), 16000)
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(two), "--hotwords", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "utterance dropped" not in proc.stderr and proc.stdout.count("\n") >= 2, proc.stdout


# --- building a database ------------------------------------------------------------------------------------

def test_build_skips_and_reports_bad_lines(tmp_path):
    lines = ["惠新西街\t2", "朝阳公园\tnan", "NIO House\tinf", "Carole Quintero\t-inf", "彗新西街\t-5", "Lindsey\t1e308",
             "乙" * 40000, "A" * 150, "ok name\t3"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = _cli("hotwords", "build", str(tmp_path / "list.txt"), "-o", str(tmp_path / "h.db"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for number in (2, 3, 4, 5, 6, 7, 8):
        assert f"list.txt:{number}:" in proc.stderr, (number, proc.stderr)
    assert "at most 100" in proc.stderr and "outside 0-1e+06" in proc.stderr
    assert len(HotwordDatabase.load(tmp_path / "h.db")) == 2
    strict = _cli("hotwords", "build", str(tmp_path / "list.txt"), "-o", str(tmp_path / "s.db"), "--strict")
    _one_line(strict, 2, "--strict")
    assert not (tmp_path / "s.db").exists()


def test_directories_given_as_lists_or_databases_are_one_line(tmp_path):
    _one_line(_cli("hotwords", "build", str(tmp_path), "-o", str(tmp_path / "h.db")), 2, "is a directory")
    _one_line(_cli("hotwords", "query", str(tmp_path), "--text", "x"), 2, "is a directory")


# --- audio sources --------------------------------------------------------------------------------------------

def test_a_fifo_and_a_process_substitution_stream_without_seeking(tmp_path, demo_bundle):
    expected = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(WAV)).stdout
    assert expected.strip()
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(WAV.read_bytes()))
    writer.start()
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(fifo))
    writer.join()
    assert proc.returncode == 0 and proc.stdout == expected, proc.stderr
    sub = subprocess.run(["bash", "-c", f"{sys.executable} -m nim4_edge.cli listen --bundle {demo_bundle} --wav <(cat {WAV})"],
                         capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0 and sub.stdout == expected, sub.stderr


def test_a_fifo_with_no_writer_is_reported_not_waited_on(tmp_path, demo_bundle):
    fifo = tmp_path / "nobody.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(fifo), timeout=FIFO_WRITER_WAIT_S + 120)
    assert time.monotonic() - t0 < FIFO_WRITER_WAIT_S + 60
    _one_line(proc, 2, "no writer")


def _wav_with_header(path: Path, channels: int, rate: int, extensible_guid: bytes | None = None) -> Path:
    frames = np.zeros((1600, channels), "<i2").tobytes()
    if extensible_guid is None:
        fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * 2 * channels) & 0xFFFFFFFF, (2 * channels) & 0xFFFF, 16)
    else:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * 2 * channels, 2 * channels, 16, 22, 16, 0) + extensible_guid
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(frames)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames)
    return path


@pytest.mark.parametrize("channels, rate, message", [
    (1, 10**9, "outside 1000-384000 Hz"),
    (1, 4294967295, "outside 1000-384000 Hz"),
    (1, 999, "outside 1000-384000 Hz"),
    (65535, 16000, "channels"),
])
def test_implausible_headers_are_one_line(tmp_path, demo_bundle, channels, rate, message):
    path = _wav_with_header(tmp_path / "odd.wav", min(channels, 65535), rate)
    _one_line(_cli("listen", "--bundle", str(demo_bundle), "--wav", str(path)), 2, message)


def test_an_extensible_wav_is_pcm_only_with_the_whole_pcm_guid(tmp_path, demo_bundle):
    pcm_guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    good = _wav_with_header(tmp_path / "good.wav", 1, 16000, pcm_guid)
    assert _cli("listen", "--bundle", str(demo_bundle), "--wav", str(good)).returncode == 0
    impostor = _wav_with_header(tmp_path / "bad.wav", 1, 16000, struct.pack("<H", 1) + b"\x00" * 14)
    _one_line(_cli("listen", "--bundle", str(demo_bundle), "--wav", str(impostor)), 2, "unsupported WAV encoding")


def test_stdin_rate_outside_the_range_is_one_line(demo_bundle):
    proc = _cli("listen", "--bundle", str(demo_bundle), "--stdin", "--stdin-rate", "1", input="\0" * 3200, timeout=60)
    _one_line(proc, 2, "--stdin-rate", "outside")


def test_each_file_of_a_batch_fails_alone(tmp_path, demo_bundle):
    missing, folder = tmp_path / "missing.wav", tmp_path / "folder.wav"
    folder.mkdir()
    proc = _cli("transcribe", "--bundle", str(demo_bundle), str(missing), str(WAV), str(folder), str(EXAMPLES / "zh_window.wav"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "set the temperature to 21 degrees" in proc.stdout and "zh_window.wav: " in proc.stdout
    assert "no such file" in proc.stderr and "is a directory" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the reader as another user: needs root to switch")
def test_an_unreadable_file_is_one_line(tmp_path, demo_bundle):
    """Root reads every file, so the CLI runs as `nobody` on a file only root may read."""
    secret = tmp_path / "secret.wav"
    shutil.copy(WAV, secret)
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    try:
        probe = subprocess.run([sys.executable, "-c", "import nim4_edge.cli"], capture_output=True, user=65534, timeout=60)
    except PermissionError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("the package is not importable as user nobody here (install folder not world-readable)")
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle), "--wav", str(secret),
                           "--no-verify"], capture_output=True, text=True, user=65534, timeout=300,
                          env=os.environ | {"NIM4_EDGE_CACHE": str(tmp_path / "nobody-cache")})
    _one_line(proc, 2, "permission denied")


def test_a_file_whose_reads_fail_is_one_line(demo_bundle):
    """/proc/self/mem opens, and its first read fails (EIO): a read error, for root too."""
    _one_line(_cli("listen", "--bundle", str(demo_bundle), "--wav", "/proc/self/mem"), 2, "read failed")


# --- output paths ----------------------------------------------------------------------------------------------

def test_bad_output_paths_fail_before_the_work(tmp_path, demo_bundle):
    (tmp_path / "list.txt").write_text("惠新西街\n", encoding="utf-8")
    (tmp_path / "a-file").write_text("x")
    manifest = str(EXAMPLES / "transcripts.jsonl")
    cases = [
        (("hotwords", "build", str(tmp_path / "list.txt"), "-o", str(tmp_path)), "is a directory"),
        (("hotwords", "build", str(tmp_path / "list.txt"), "-o", "/proc/x.db"), "nothing can be written"),
        (("hotwords", "build", str(tmp_path / "list.txt"), "-o", str(tmp_path / "no" / "such" / "h.db")), "does not exist"),
        (("eval", "--bundle", str(demo_bundle), "--testset", manifest, "--out", "/proc/r.json"), "nothing can be written"),
        (("eval", "--bundle", str(demo_bundle), "--testset", manifest, "--out", str(tmp_path)), "is a directory"),
        (("bench", "--bundle", str(demo_bundle), "--testset", manifest, "--out", str(tmp_path / "a-file")), "not a folder"),
        (("bench", "--bundle", str(demo_bundle), "--testset", manifest, "--out", "/proc/bench"), "nothing can be written"),
    ]
    for args, message in cases:
        t0 = time.monotonic()
        proc = _cli(*args, timeout=120)
        _one_line(proc, 2, message)
        assert time.monotonic() - t0 < 30, args  # refused up front, not after evaluating the test set


def test_onnx_external_data_must_lie_inside_the_bundle_and_be_listed(bundle, tmp_path):
    onnx = pytest.importorskip("onnx", reason="writing a graph with external data needs the export extra (onnx)")
    from nim4_edge.runtime.onnx_external import external_data_locations

    model = onnx.load(str(bundle / "encoder.onnx"))
    onnx.save(model, str(bundle / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="evil.data", size_threshold=0)
    (bundle / "evil.data").rename(tmp_path / "evil.data")
    crafted = onnx.load(str(bundle / "encoder.onnx"), load_external_data=False)
    for tensor in crafted.graph.initializer:  # the onnx package refuses '..': a crafted file need not
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../evil.data"
    (bundle / "encoder.onnx").write_bytes(crafted.SerializeToString())
    assert external_data_locations(bundle / "encoder.onnx") == ["../evil.data"]
    assert (tmp_path / "evil.data").is_file()  # written beside the bundle, where a graph must not reach
    digest = hashlib.sha256((bundle / "encoder.onnx").read_bytes()).hexdigest()
    size = (bundle / "encoder.onnx").stat().st_size
    _edit_manifest(bundle, lambda d: d | {"files": {**d["files"], "encoder.onnx": {"bytes": size, "sha256": digest}}})
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV), "--encoder-precision", "fp32"), 2,
              "outside the bundle folder")
    # inside the folder but not in the manifest (so never hash-checked): refused too
    onnx.save(model, str(bundle / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    digest = hashlib.sha256((bundle / "encoder.onnx").read_bytes()).hexdigest()
    size = (bundle / "encoder.onnx").stat().st_size
    _edit_manifest(bundle, lambda d: d | {"files": {**d["files"], "encoder.onnx": {"bytes": size, "sha256": digest}}})
    _one_line(_cli("listen", "--bundle", str(bundle), "--wav", str(WAV), "--encoder-precision", "fp32"), 2,
              "does not list")


def test_a_reader_that_goes_away_ends_listen_quietly(demo_bundle):
    """`listen --json | head -c 10`: the pipe closes under the first event; no traceback."""
    sub = subprocess.run(["bash", "-c", f"{sys.executable} -m nim4_edge.cli listen --bundle {demo_bundle} --wav {WAV} "
                          "--json --partial-every 1 | head -c 10 > /dev/null; echo ${PIPESTATUS[0]} >&2"],
                         capture_output=True, text=True, timeout=300)
    assert "Traceback" not in sub.stderr, sub.stderr
    assert sub.stderr.strip().splitlines()[-1] in ("0", "141")  # 0: everything fitted in the pipe's buffer
