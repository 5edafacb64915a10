"""The deployment budget: what the CPSL teacher and the real-time student keep and cost, per precision.

    python benchmarks/deployment_budget.py                    # both parts; resumes; see the times below
    python benchmarks/deployment_budget.py --part accuracy    # or --part cost
    python benchmarks/deployment_budget.py --table-only       # rebuild the JSON and table from what ran

**Accuracy, on the benchmark (3 seeds).** Per seed, the CPSL teacher is the results table's full-CPSL cell
(``benchmarks/runs/cpsl_paper/seed<k>``: 2000-step warm-up, pseudo labels, 1000 CPSL steps; run first if
missing). From it, in ``benchmarks/runs/deployment/<network>/seed<k>``, the paper's two distillation rounds
into the teacher's own architecture (``distilled``) and into the student (``student``: MobileNetV3-Large
width 0.75 with a 128-channel LR-ASPP head, :data:`STUDENT`, 6.6x cheaper in GFLOPs than the benchmark's
narrow ResNet-18 teacher, ``benchmarks/results/network_cost.md``). Each of teacher, distilled and student
is exported by ``scripts/export.py`` with ``--int8 --fp16`` (the gates are measured, not enforced, here:
the budget reports them), and its mIoU on target val read from the manifests (ONNX Runtime, float32, FP16
and INT8). Paired by seed: student minus teacher, student minus distilled.

**Cost, at the deployment sizes (random weights: latency and size do not depend on them).** DeepLab-v2
ResNet-101 (``configs/gta.json``'s network) and the full student (width 1.0, 128-channel head, torchvision's
design) at 1024x2048 and 512x1024: parameters, GFLOPs (``models.cost.count_flops``), the ONNX file's size,
and ONNX Runtime CPU latency (batch 1, argmax graph, median of timed runs after one warm-up) as float32,
FP16 and INT8 Q/DQ (MinMax calibration on two random images: speed only); ``ort_latency_ratio`` is the
latency over the teacher's float32 at the same size, in the same run. On a host with an NVIDIA GPU and
``trtexec``, each artefact is also built into a TensorRT engine and timed (GPU compute median and p99);
elsewhere that part is skipped with the reason printed and recorded.

ONNX Runtime's CPU provider is not the deployment runtime: it has no FP16 convolution kernels on x86 (the
FP16 graph runs with casts, or not at all) and its INT8 kernels are not faster than float32 on this CPU.
The CPU ratios measure what the networks cost, the precisions' CPU columns what this CPU does with them.

Every finished measurement is kept in ``benchmarks/runs/deployment/measurements.json`` (a rerun skips it).
Writes ``benchmarks/results/deployment_budget.json`` (a list ``artefacts``, one entry per network and
precision) and ``deployment_budget.md``. Times on 2 cores: accuracy about 15 min per seed, cost about 30 min
(most of it ResNet-101 at 1024x2048). Time nothing else while the cost part runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from adaptation import BY_NAME, RUNS, Layout, link_stage, run_cell, run_train_process  # noqa: E402
from memory import run_measured  # noqa: E402

from cpsl_tf.quiet import quiet_tensorflow  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
OUT = RESULTS / "deployment_budget.json"
WORK = RUNS / "deployment"
CONFIG = REPO / "configs" / "bench.json"
SEEDS = (0, 1, 2)
STUDENT_NAME = "lraspp_mobilenet_v3_large"
STUDENT = (f"distill.student={STUDENT_NAME}", "distill.student_width=0.75",
           "distill.student_head_channels=128")
# The distillation runs: the paper's rounds into the teacher's architecture, the student, and a diagnostic
# (see "Why the student falls short" in README): the student's rounds four times as long.
DISTILLED = {"distilled": (), "student": STUDENT, "student_4x": (*STUDENT, "distill.iterations=2000")}
DEFAULT_NETWORKS = ("teacher", "distilled", "student")
PRECISIONS = ("float32", "float16", "int8")
# The exported artefact of each precision (scripts/export.py's names).
ARTEFACTS = {"float32": "model.onnx", "float16": "model_fp16.onnx", "int8": "model_int8.onnx"}
SIZES = ((1024, 2048), (512, 1024))
# Timed runs after one warm-up: fewer where one run takes long.
TIMED_RUNS = {"teacher": {(1024, 2048): 3, (512, 1024): 5}, "student": {(1024, 2048): 10, (512, 1024): 20}}
GOALS = {"student_keeps_of_teacher_miou": 0.90, "student_latency_of_teacher_at_1024x2048": 0.10,
         "student_int8_miou_drop_points": 1.0}


class Measurements:
    """The finished measurements, by key, saved after each one (a rerun skips what is there). Each save
    merges into the file as it is then, so two invocations measuring different keys keep both."""

    def __init__(self, path: Path):
        self.path = path
        self.values = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str, measure, *arguments):
        """The value of ``key``: ``measure(*arguments)`` the first time, saved, then read back."""
        if key not in self.values:
            print(f"measuring {key} ...", flush=True)
            value = measure(*arguments)
            from cpsl_tf.io_utils import atomic_write_json

            self.values = {**self._read(), key: value}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.values)
        return self.values[key]


# ---------------------------------------------------------------------------------------------- accuracy

def teacher_run(seed: int) -> Path:
    """The results table's full-CPSL cell of ``seed`` (run when missing)."""
    run_cell(BY_NAME["cpsl_paper"], seed, CONFIG, [], Layout(), reuse_record=False)
    return RUNS / "cpsl_paper" / f"seed{seed}"


def distilled_run(network: str, seed: int) -> Path:
    """The two distillation rounds of ``network`` from the CPSL teacher of ``seed``."""
    teacher = teacher_run(seed)
    run_dir = WORK / network / f"seed{seed}"
    for stage in ("warmup", "pseudo", "cpsl"):
        link_stage(teacher, run_dir, stage)
    overrides = [f"train.seed={seed}", *BY_NAME["cpsl_paper"].settings(Layout()), *DISTILLED[network]]
    for stage in ("distill1", "distill2"):
        if not (run_dir / stage / "done.json").exists():
            run_train_process(CONFIG, overrides, run_dir, stage, run_dir.with_suffix(".log"))
    return run_dir


def export_scores(checkpoint: Path, out: Path) -> dict:
    """``scripts/export.py --int8 --fp16`` of ``checkpoint`` (its run's target val, calibration on target
    train); the mIoU (ONNX Runtime) of each precision, from the manifests."""
    command = [sys.executable, str(REPO / "scripts" / "export.py"), "--checkpoint", str(checkpoint),
               "--out", str(out), "--int8", "--fp16", "--max-int8-miou-drop", "100",
               "--max-fp16-miou-drop", "100"]
    shutil.rmtree(out, ignore_errors=True)  # no manifest of an earlier, interrupted export is read
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    from cpsl_tf.export.manifest import manifest_path

    manifests = {precision: manifest_path(out / ARTEFACTS[precision]) for precision in PRECISIONS}
    if done.returncode != 0 and not manifests["float32"].exists():
        raise RuntimeError(f"export of {checkpoint} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    scores = {"command": " ".join(command[1:]), "exit_code": done.returncode}
    for precision, path in manifests.items():
        parity = json.loads(path.read_text())["parity"] if path.exists() else {}
        scores[precision] = {"miou": parity.get("miou_onnx"), "passed": parity.get("passed"),
                             "failures": parity.get("failures", [])}
    return scores


def final_model(network: str, seed: int) -> Path:
    """The network ``network`` of ``seed``: the CPSL teacher, or the last round distilled from it."""
    if network == "teacher":
        return teacher_run(seed) / "cpsl" / "model.weights.h5"
    return distilled_run(network, seed) / "distill2" / "model.weights.h5"


def accuracy_of(network: str, seed: int) -> dict:
    return export_scores(final_model(network, seed), WORK / "exports" / network / f"seed{seed}")


def measure_accuracy(seeds, networks, store: Measurements) -> None:
    for seed in seeds:
        for network in networks:
            store.get(f"accuracy/{network}/seed{seed}", accuracy_of, network, seed)


# -------------------------------------------------------------------------------------------------- cost

# Above this many input pixels, the teacher's INT8 ranges are measured on half-size crops (quantize_on_crops).
TEACHER_CALIBRATION_PIXELS = 512 * 1024


def deployment_network(network: str):
    from cpsl_tf.config import load_config
    from cpsl_tf.models.lraspp import build_lraspp_student
    from cpsl_tf.models.segmenter import build_segmenter

    if network == "teacher":
        model_cfg = load_config(REPO / "configs" / "gta.json").model
        return build_segmenter(dataclasses.replace(model_cfg, imagenet_weights=False), 19)
    return build_lraspp_student(19, width=1.0, head_channels=128, imagenet_weights=False)


def deployment_artefact(network: str, size: tuple[int, int], precision: str, folder: Path) -> Path | str:
    """The ``precision`` ONNX model of the deployment ``network`` at ``size`` (made, with the float32 model
    it comes from, if missing); for INT8, the reason instead when quantising fails (it runs in a process of
    its own, since ONNX Runtime's calibration can exhaust the host's memory at full size)."""
    import cv2

    from cpsl_tf.export.fp16 import convert_fp16
    from cpsl_tf.export.onnx_export import export_onnx

    float32, path = folder / ARTEFACTS["float32"], folder / ARTEFACTS[precision]
    folder.mkdir(parents=True, exist_ok=True)
    if not float32.exists():
        export_onnx(deployment_network(network), float32, height=size[0], width=size[1])
    if path.exists():
        return path
    if precision == "float16":
        convert_fp16(float32, path)
    elif precision == "int8":
        calibration = folder / "calibration"
        calibration.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for index in range(2):
            cv2.imwrite(str(calibration / f"{index}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        images = str(calibration)
        if network == "teacher" and size[0] * size[1] > TEACHER_CALIBRATION_PIXELS:
            quantize = ("import sys; sys.path.insert(0, 'benchmarks'); "
                        "from deployment_budget import quantize_on_crops; "
                        f"quantize_on_crops({network!r}, {tuple(size)!r}, {str(path)!r}, {images!r})")
        else:
            quantize = ("from cpsl_tf.export.quantize import quantize_int8; "
                        "from cpsl_tf.export.samples import folder_samples; "
                        f"quantize_int8({str(float32)!r}, {str(path)!r}, folder_samples({images!r}), "
                        f"size={tuple(size)!r}, method='minmax')")
        done = run_measured([sys.executable, "-c", quantize])
        if done["exit_code"] != 0:
            how = ("killed (signal 9: out of memory)" if done["exit_code"] == -9
                   else f"failed (exit code {done['exit_code']})")
            return (f"not made here: ONNX Runtime's quantize_static (MinMax calibration, 2 images) {how} at "
                    f"{done['peak_rss_gib']:.1f} GiB resident")
    return path


def quantize_on_crops(network: str, size: tuple[int, int], path: str, calibration: str) -> None:
    """The INT8 model at ``size`` with its ranges measured on half-size crops (``quantize_int8``'s
    ``calibration_model``): whole 1024x2048 images of the R101 do not fit ONNX Runtime's calibration in 24 GB.
    Both graphs come from one new random instance of the network (file size and latency do not depend on
    the weights' values)."""
    import tempfile

    from cpsl_tf.export.onnx_export import export_onnx
    from cpsl_tf.export.quantize import quantize_int8
    from cpsl_tf.export.samples import folder_samples

    model = deployment_network(network)
    with tempfile.TemporaryDirectory(prefix="budget-int8-", dir=Path(path).parent) as folder:
        full, crop = Path(folder) / "full.onnx", Path(folder) / "crop.onnx"
        export_onnx(model, full, height=size[0], width=size[1])
        export_onnx(model, crop, height=size[0] // 2, width=size[1] // 2)
        quantize_int8(full, path, folder_samples(calibration), size=size, method="minmax",
                      calibration_model=crop)


def ort_latency(path: Path, size: tuple[int, int], runs: int) -> dict:
    """Median and spread of ONNX Runtime (CPU, every core) over ``runs`` timed calls after one warm-up."""
    import onnxruntime as ort

    from cpsl_tf.export.fp16 import try_session

    if path.name == ARTEFACTS["float16"]:
        ok, reason = try_session(path)
        if not ok:
            return {"median_ms": None, "reason": reason}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    session.run(None, {name: batch})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": float(np.median(times)), "min_ms": float(np.min(times)),
            "max_ms": float(np.max(times)), "runs": runs}


def gpu_status() -> tuple[bool, str]:
    """(True, GPU name) when trtexec and an NVIDIA GPU are present, else (False, why not)."""
    if shutil.which("trtexec") is None:
        return False, "trtexec is not on PATH (TensorRT is not installed)"
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver (nvidia-smi not found)"
    query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True)
    names = query.stdout.strip().splitlines()
    return (True, names[0]) if query.returncode == 0 and names else (False, "nvidia-smi lists no GPU")


# trtexec's summary line, e.g. "GPU Compute Time: min = 7.54 ms, max = 10.17 ms, mean = 8.24 ms,
# median = 8.19 ms, percentile(50%) = 8.19 ms, percentile(99%) = 9.90 ms".
GPU_COMPUTE = re.compile(r"GPU Compute Time: .*?median = ([0-9.]+) ms.*?percentile\(99%\) = ([0-9.]+) ms")


def parse_gpu_compute(output: str) -> dict:
    match = GPU_COMPUTE.search(output)
    if match is None:
        raise ValueError("trtexec printed no 'GPU Compute Time' summary with a median and a 99th percentile")
    return {"median_ms": float(match[1]), "p99_ms": float(match[2])}


def trtexec_times(path: Path, precision: str, size: tuple[int, int]) -> dict:
    """Build an engine of ``path`` with trtexec and time it: GPU compute median and p99 (batch 1), or why
    not. As ``build_engine.sh`` does: TensorRT 11 builds the FP16 and Q/DQ graphs strongly typed; 8.6/10
    build FP16 from the float32 graph with ``--fp16`` and the Q/DQ graph with ``--stronglyTyped`` (10
    only)."""
    from cpsl_tf.export.tensorrt_build import EngineSpec, trtexec_benchmark_command, trtexec_build_command

    version = subprocess.run(["trtexec"], capture_output=True, text=True).stdout
    generation = "11" if re.search(r"TensorRT version: *1[1-9]", version) else "8.6/10"
    source, typed = path, precision != "float32"
    if generation == "8.6/10" and precision == "float16":
        source, typed = path.with_name(ARTEFACTS["float32"]), False
    spec = EngineSpec(onnx=str(source), engine=str(path.with_suffix(".engine")),
                      precision=precision_flag(precision), height=size[0], width=size[1], layout="nhwc",
                      min_batch=1, opt_batch=1, max_batch=1, timing_cache=str(path.parent / "timing.cache"),
                      strongly_typed=typed)
    try:
        subprocess.run(trtexec_build_command(spec, generation), check=True, capture_output=True, text=True)
        timed = subprocess.run(trtexec_benchmark_command(spec, batch=1), check=True, capture_output=True,
                               text=True)
    except subprocess.CalledProcessError as err:
        return {"median_ms": None, "p99_ms": None,
                "reason": f"trtexec failed (exit {err.returncode}): {(err.stdout or '')[-500:]}"}
    return parse_gpu_compute(timed.stdout)


def precision_flag(precision: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "int8": "int8"}[precision]


def parameters(network: str) -> int:
    return int(deployment_network(network).count_params())


def gigaflops(network: str, size: tuple[int, int]) -> float:
    from cpsl_tf.models.cost import count_flops

    return count_flops(deployment_network(network), size) / 1e9


def runtime_cost(network: str, size: tuple[int, int], precision: str, folder: Path) -> dict:
    """The artefact's file size and its ONNX Runtime CPU latency (or why it could not be made here)."""
    path = deployment_artefact(network, size, precision, folder)
    if isinstance(path, str):
        return {"file_bytes": None, "ort": {"median_ms": None, "reason": path}}
    return {"file_bytes": path.stat().st_size, "ort": ort_latency(path, size, TIMED_RUNS[network][size])}


def measure_cost(store: Measurements) -> dict:
    gpu, gpu_note = gpu_status()
    if not gpu:
        print(f"trtexec columns skipped: {gpu_note}", flush=True)
    for network in ("teacher", "student"):
        store.get(f"cost/{network}/params", parameters, network)
        for size in SIZES:
            tag = f"{size[0]}x{size[1]}"
            store.get(f"cost/{network}/{tag}/gflops", gigaflops, network, size)
            folder = WORK / "cost" / network / tag
            for precision in PRECISIONS:
                key = f"cost/{network}/{tag}/{precision}"
                store.get(key, runtime_cost, network, size, precision, folder)
                if gpu and store.values[key]["file_bytes"] is not None:
                    path = deployment_artefact(network, size, precision, folder)
                    store.get(f"{key}/trtexec", trtexec_times, path, precision, size)
    return {"gpu": gpu, "gpu_note": gpu_note}


# ------------------------------------------------------------------------------------------------ report

def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _spread(values):
    values = [v for v in values if v is not None]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(values: dict, gpu: dict) -> dict:
    seeds = sorted({int(key.rsplit("seed", 1)[1]) for key in values if key.startswith("accuracy/")})
    accuracy = {}
    for network in ("teacher", *DISTILLED):
        for precision in PRECISIONS:
            per_seed = {seed: values.get(f"accuracy/{network}/seed{seed}", {}).get(precision, {}).get("miou")
                        for seed in seeds}
            accuracy[(network, precision)] = per_seed

    def paired(a, b):
        pairs = [(accuracy[a][s], accuracy[b][s]) for s in seeds
                 if accuracy[a].get(s) is not None and accuracy[b].get(s) is not None]
        differences = [100 * (x - y) for x, y in pairs]
        return {"seeds": len(pairs), "mean_points": _mean(differences), "sd_points": _spread(differences),
                "per_seed_points": differences}

    comparisons = {
        "student_minus_teacher": paired(("student", "float32"), ("teacher", "float32")),
        "student_4x_minus_student": paired(("student_4x", "float32"), ("student", "float32")),
        "student_minus_distilled": paired(("student", "float32"), ("distilled", "float32")),
        "distilled_minus_teacher": paired(("distilled", "float32"), ("teacher", "float32")),
        "teacher_int8_minus_float32": paired(("teacher", "int8"), ("teacher", "float32")),
        "teacher_fp16_minus_float32": paired(("teacher", "float16"), ("teacher", "float32")),
        "student_int8_minus_float32": paired(("student", "int8"), ("student", "float32")),
        "student_fp16_minus_float32": paired(("student", "float16"), ("student", "float32")),
    }
    artefacts = []
    for network in ("teacher", "student"):
        for precision in PRECISIONS:
            entry = {"network": network, "precision": precision,
                     "miou": _mean(accuracy[(network, precision)].values()),
                     "miou_sd": _spread(accuracy[(network, precision)].values()),
                     "miou_seeds": len([v for v in accuracy[(network, precision)].values() if v is not None]),
                     "params": values.get(f"cost/{network}/params"),
                     "gflops": {}, "ort_latency_ms": {}, "ort_latency_ratio": {}, "file_bytes": {},
                     "trtexec": {}}
            for size in SIZES:
                tag = f"{size[0]}x{size[1]}"
                entry["gflops"][tag] = values.get(f"cost/{network}/{tag}/gflops")
                cell = values.get(f"cost/{network}/{tag}/{precision}", {})
                reference = values.get(f"cost/teacher/{tag}/float32", {}).get("ort", {}).get("median_ms")
                latency = cell.get("ort", {}).get("median_ms")
                entry["ort_latency_ms"][tag] = latency
                entry["ort_latency_ratio"][tag] = (latency / reference if latency is not None and reference
                                                   else None)
                entry["file_bytes"][tag] = cell.get("file_bytes")
                entry["trtexec"][tag] = values.get(f"cost/{network}/{tag}/{precision}/trtexec")
                if cell.get("ort", {}).get("reason"):
                    entry.setdefault("notes", []).append(f"{tag}: {cell['ort']['reason']}")
            artefacts.append(entry)
    by = {(a["network"], a["precision"]): a for a in artefacts}
    teacher, student = by[("teacher", "float32")], by[("student", "float32")]
    keeps = (student["miou"] / teacher["miou"]) if student["miou"] and teacher["miou"] else None
    latency = student["ort_latency_ratio"].get("1024x2048")
    int8_drop = comparisons["student_int8_minus_float32"]["mean_points"]
    goals = {
        "student_keeps_of_teacher_miou": {
            "value": keeps, "goal": f">= {GOALS['student_keeps_of_teacher_miou']}",
                                          "holds": None if keeps is None
                                          else keeps >= GOALS["student_keeps_of_teacher_miou"]},
        "student_latency_of_teacher_at_1024x2048": {
            "value": latency, "goal": f"<= {GOALS['student_latency_of_teacher_at_1024x2048']}",
            "holds": (None if latency is None
                      else latency <= GOALS["student_latency_of_teacher_at_1024x2048"])},
        "student_int8_miou_drop_points": {
            "value": None if int8_drop is None else -int8_drop,
            "goal": f"<= {GOALS['student_int8_miou_drop_points']}",
            "holds": None if int8_drop is None else -int8_drop <= GOALS["student_int8_miou_drop_points"]},
    }
    return {"artefacts": artefacts, "comparisons": comparisons, "goals": goals, "seeds": seeds,
            "accuracy_per_seed": {f"{n}/{p}": {str(s): v for s, v in per_seed.items()}
                                  for (n, p), per_seed in accuracy.items()},
            "trtexec": {"measured": gpu["gpu"], "note": gpu["gpu_note"]}}


def second_runtime_agreements() -> dict:
    """OpenCV DNN's agreement with ONNX Runtime (float32 gate) per exported network and seed, from the
    exports' manifests."""
    found = {}
    for manifest in sorted((WORK / "exports").glob("*/seed*/manifest.json")):
        second = (json.loads(manifest.read_text()).get("parity") or {}).get("second_runtime")
        if second is not None:
            network, seed = manifest.parent.parent.name, manifest.parent.name
            found.setdefault(network, {})[seed] = second["argmax_agreement"]
    return found


def _fmt(value, scale=1.0, digits=1, suffix=""):
    return "n/a" if value is None else f"{scale * value:.{digits}f}{suffix}"


def markdown(result: dict) -> str:
    tags = [f"{h}x{w}" for h, w in SIZES]
    gpu = result["trtexec"]["measured"]
    trt_header = "".join(f" TensorRT median / p99 ms {t} |" for t in tags) if gpu else ""
    lines = ["| network | precision | mIoU (bench, mean ± sd) | params | "
             + " | ".join(f"GFLOPs {t} | ORT ms {t} | ratio {t}" for t in tags) + " | ONNX MB |" + trt_header,
             "|---|---|---|---|" + "---|---|---|" * len(tags) + "---|" + ("---|" * len(tags) if gpu else "")]
    for a in result["artefacts"]:
        row = [a["network"], a["precision"],
               f"{_fmt(a['miou'], 100)} ± {_fmt(a['miou_sd'], 100)} ({a['miou_seeds']} seeds)",
               _fmt(a["params"], 1e-6, 2, " M")]
        for tag in tags:
            row += [_fmt(a["gflops"][tag], 1, 1), _fmt(a["ort_latency_ms"][tag], 1, 0),
                    _fmt(a["ort_latency_ratio"][tag], 1, 3)]
        row.append(_fmt(a["file_bytes"][tags[0]], 1e-6, 1))
        if gpu:
            row += [f"{_fmt((a['trtexec'][t] or {}).get('median_ms'), 1, 2)} / "
                    f"{_fmt((a['trtexec'][t] or {}).get('p99_ms'), 1, 2)}" for t in tags]
        lines.append("| " + " | ".join(row) + " |")
    for a in result["artefacts"]:
        for note in a.get("notes", []):
            lines.append(f"\n{a['network']} {a['precision']} at {note}")
    lines += ["", "Other distilled networks, float32 mIoU on the benchmark:", ""]
    for network in DISTILLED:
        if network == "student":
            continue
        values = [v for v in result["accuracy_per_seed"][f"{network}/float32"].values() if v is not None]
        lines.append(f"- {network}: {_fmt(_mean(values), 100)} ± {_fmt(_spread(values), 100)} "
                     f"({len(values)} seeds)")
    agreements = [value for per_seed in result.get("second_runtime_agreement", {}).values()
                  for value in per_seed.values()]
    if agreements:
        lines += ["", f"OpenCV DNN vs ONNX Runtime, float32 class maps: at least {100 * min(agreements):.3f} "
                  f"% of the pixels agree over {len(agreements)} exports (gate: 99.9 %)."]
    lines += ["", "Paired by seed (mIoU points, mean ± sd over seeds):", ""]
    for name, c in result["comparisons"].items():
        lines.append(f"- {name.replace('_', ' ')}: {_fmt(c['mean_points'], 1, 2)} ± "
                     f"{_fmt(c['sd_points'], 1, 2)}"
                     f" ({c['seeds']} seeds)")
    lines += ["", "Goals:", ""]
    for name, g in result["goals"].items():
        verdict = "not measured" if g["holds"] is None else ("holds" if g["holds"] else "does not hold")
        lines.append(f"- {name.replace('_', ' ')}: {_fmt(g['value'], 1, 3)} (goal {g['goal']}): {verdict}")
    lines += ["", f"TensorRT (trtexec): {'measured' if result['trtexec']['measured'] else 'skipped'}: "
              f"{result['trtexec']['note']}.", "",
              f"Command: `{result['command']}`. mIoU: the benchmark networks (narrow ResNet-18 teacher, "
              "student width 0.75) on target val, ONNX Runtime. Costs: the deployment networks (DeepLab-v2 "
              "R101, student width 1.0), random weights, batch 1, ONNX Runtime CPU on "
              f"{result['machine']['cpus']} cores; ratio = latency / teacher float32 at the same size."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["accuracy", "cost", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS),
                        choices=["teacher", *DISTILLED], help="networks of the accuracy part")
    parser.add_argument("--table-only", action="store_true", help="rebuild the outputs from what ran")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from cpsl_tf.io_utils import atomic_write_json, atomic_write_text

    store = Measurements(WORK / "measurements.json")
    gpu = {"gpu": False, "gpu_note": "the cost part has not run"}
    if not args.table_only:
        if args.part in ("accuracy", "both"):
            measure_accuracy(args.seeds, args.networks, store)
        if args.part in ("cost", "both"):
            status = measure_cost(store)
            gpu = {"gpu": status["gpu"], "gpu_note": status["gpu_note"]}
    if args.table_only or args.part == "accuracy":
        status = gpu_status()
        gpu = {"gpu": status[0], "gpu_note": status[1]}
    result = summarise(store.values, gpu)
    result["second_runtime_agreement"] = second_runtime_agreements()
    result["command"] = "python benchmarks/deployment_budget.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    result["machine"] = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    atomic_write_json(args.out, result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
