"""The export command as a library: ONNX + parity gate + manifest, optional INT8 / FP16 / TensorRT.

``export_model`` writes into ``out``: ``model.onnx`` + ``manifest.json``, ``model_int8.onnx`` +
``model_int8.manifest.json``, ``model_fp16.onnx`` + ``model_fp16.manifest.json``, engines with their
manifests, and ``build_engine.sh``. Gates that fail raise :class:`ParityError` *after* the manifests are
written, so the figures are on disk and in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from cpsl_tf.config import ExportConfig
from cpsl_tf.export import fp16, quantize
from cpsl_tf.export.manifest import make_manifest, manifest_path, write_manifest
from cpsl_tf.export.onnx_export import (
    expected_dilated_convs,
    export_onnx,
    graph_problems,
    graph_report,
    inner_transposes,
    with_logits_output,
)
from cpsl_tf.export.parity import (
    ParityError,
    describe,
    float32_gate,
    measure,
    miou_drop_gate,
    second_runtime_parity,
)
from cpsl_tf.export.runners import KerasRunner, OnnxRunner
from cpsl_tf.export.tensorrt_build import EngineSpec, build_engine_script
from cpsl_tf.io_utils import atomic_write_bytes, atomic_write_text, current_umask
from cpsl_tf.models.checkpoint import describe_network


@dataclass
class ExportOptions:
    int8: bool = False
    fp16: bool = False
    tensorrt: bool = False
    max_int8_miou_drop: float = 0.01
    max_fp16_miou_drop: float = 0.005
    batch_size: int = 2
    max_engine_batch: int = 4
    # (height, width) of the crops INT8 ranges are measured on (quantize.quantize_int8); None: whole images.
    int8_calibration_crop: tuple[int, int] | None = None


def export_model(model, meta: dict, out: str | Path, cfg: ExportConfig, eval_samples: Sequence,
                 calibration_samples: Sequence = (), options: ExportOptions | None = None,
                 checkpoint: str | Path | None = None, log=print,
                 evaluation_data: dict | None = None) -> dict:
    """Run the whole export; return {artefact name: manifest}. ``evaluation_data`` says where
    ``eval_samples`` come from (e.g. dataset, root and split) for the manifests."""
    options = options or ExportOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = meta.get("model", {})
    align_corners = bool(model_cfg.get("align_corners", True))
    size = (cfg.height, cfg.width)
    common = dict(height=cfg.height, width=cfg.width, layout=cfg.layout, output=cfg.output,
                  argmax_dtype=cfg.argmax_dtype, class_names=meta["class_names"],
                  input_mean=model_cfg.get("input_mean", [0.0] * 3),
                  input_std=model_cfg.get("input_std", [1.0] * 3),
                  opset=cfg.opset, checkpoint=checkpoint, align_corners=align_corners,
                  evaluation_data={**(evaluation_data or {}), "images": len(eval_samples)},
                  network={**describe_network(meta), "params": int(model.count_params())},
                  distilled_from=meta.get("distilled_from"))

    onnx_path = out / "model.onnx"
    proto = export_onnx(model, onnx_path, height=cfg.height, width=cfg.width, layout=cfg.layout,
                        output=cfg.output, argmax_dtype=cfg.argmax_dtype, opset=cfg.opset,
                        align_corners=align_corners)
    report = graph_report(proto)
    problems = graph_problems(report, align_corners=align_corners,
                              expected_dilated=expected_dilated_convs(model))
    graph_info = {"num_nodes": report["num_nodes"], "op_counts": report["op_counts"],
                  "dilated_convs": report["dilated_convs"], "resize_modes": report["resize_modes"],
                  "problems": problems, "inner_transposes": inner_transposes(report)}
    log(f"wrote {onnx_path}: {report['num_nodes']} nodes, {report['dilated_convs']} dilated Convs")

    keras_runner = KerasRunner(model, meta, size)
    float_manifest = make_manifest(artefact=onnx_path, kind="onnx", precision="float32", **common,
                                   extra={"graph": graph_info})
    write_manifest(manifest_path(onnx_path), float_manifest)  # the runner reads it
    logits_twin = None
    if cfg.output == "argmax":
        # The artefact emits only the class map; its logits are checked through its own graph with the
        # logits exposed as a second output.
        twin_path = out / ".parity_logits.onnx"
        atomic_write_bytes(twin_path, with_logits_output(proto, cfg.layout).SerializeToString())
        try:
            logits_twin = OnnxRunner(twin_path, manifest=float_manifest)
        finally:
            twin_path.unlink()
    del proto  # the sessions hold their own copies of the weights
    parity = float32_gate(measure(keras_runner, OnnxRunner(onnx_path), eval_samples,
                                  batch_size=options.batch_size, logits_candidate=logits_twin),
                          cfg.max_abs_logit_diff, cfg.min_argmax_agreement, cfg.max_relative_logit_diff)
    if problems:
        parity["failures"] = parity["failures"] + problems
        parity["passed"] = False
    second = second_runtime_parity(onnx_path, float_manifest, eval_samples, options.batch_size,
                                   cfg.min_second_runtime_agreement)
    if second is not None:
        parity["second_runtime"] = second
        parity["failures"] = parity["failures"] + second["failures"]
        parity["passed"] = parity["passed"] and second["passed"]
    float_manifest["parity"] = parity
    write_manifest(manifest_path(onnx_path), float_manifest)
    log(f"float32 parity: {describe(parity)}")
    if second is not None:
        log(f"second runtime: {second['runtime']} agrees with ONNX Runtime on "
            f"{100 * second['argmax_agreement']:.4f} % of the pixels")
    manifests = {"model.onnx": float_manifest}
    failures = [f"model.onnx: {f}" for f in parity["failures"]]

    specs = [EngineSpec(onnx="model.onnx", engine="model_fp16.engine", precision="fp16", layout=cfg.layout,
                        height=cfg.height, width=cfg.width, max_batch=options.max_engine_batch)]
    if options.int8:
        int8_path = out / "model_int8.onnx"
        crop = options.int8_calibration_crop
        if crop:
            quantize.crop_origins(size, crop)  # refuses crops larger than the input before any export
        calibration_model = out / ".calibration_crop.onnx" if crop and tuple(crop) != size else None
        if calibration_model:
            export_onnx(model, calibration_model, height=crop[0], width=crop[1], layout=cfg.layout,
                        output=cfg.output, argmax_dtype=cfg.argmax_dtype, opset=cfg.opset,
                        align_corners=align_corners)
        try:
            info = quantize.quantize_int8(onnx_path, int8_path, calibration_samples, size=size,
                                          layout=cfg.layout, evaluation_samples=eval_samples,
                                          calibration_model=calibration_model)
        finally:
            if calibration_model:
                calibration_model.unlink(missing_ok=True)
        qdq = quantize.qdq_summary(onnx.load(str(int8_path)))
        manifest = make_manifest(artefact=int8_path, kind="onnx", precision="int8 (Q/DQ)", **common,
                                 extra={"quantization": {**info, **qdq}})
        write_manifest(manifest_path(int8_path), manifest)
        result = measure(keras_runner, OnnxRunner(int8_path, manifest), eval_samples,
                         batch_size=options.batch_size)
        manifest["parity"] = miou_drop_gate(result, parity["miou_onnx"], options.max_int8_miou_drop)
        write_manifest(manifest_path(int8_path), manifest)
        log(f"int8 parity: {describe(manifest['parity'])}")
        manifests["model_int8.onnx"] = manifest
        failures += [f"model_int8.onnx: {f}" for f in manifest["parity"]["failures"]]
        specs += [EngineSpec(onnx="model.onnx", engine="model_int8.engine", precision="int8",
                             layout=cfg.layout, height=cfg.height, width=cfg.width,
                             max_batch=options.max_engine_batch),
                  EngineSpec(onnx="model_int8.onnx", engine="model_int8_qdq.engine", precision="int8",
                             layout=cfg.layout, height=cfg.height, width=cfg.width,
                             max_batch=options.max_engine_batch, strongly_typed=True)]
    if options.fp16:
        fp16_path = out / "model_fp16.onnx"
        fp16.convert_fp16(onnx_path, fp16_path)
        manifest = make_manifest(artefact=fp16_path, kind="onnx", precision="float16 (float32 I/O)",
                                 **common,
                                 extra={"conversion": "onnxconverter_common.float16, keep_io_types"})
        write_manifest(manifest_path(fp16_path), manifest)
        runnable, reason = fp16.try_session(fp16_path)
        if runnable:
            result = measure(keras_runner, OnnxRunner(fp16_path, manifest), eval_samples,
                             batch_size=options.batch_size)
            manifest["parity"] = miou_drop_gate(result, parity["miou_onnx"], options.max_fp16_miou_drop)
            failures += [f"model_fp16.onnx: {f}" for f in manifest["parity"]["failures"]]
            log(f"fp16 parity: {describe(manifest['parity'])}")
        else:
            manifest["parity"] = {"measured": False, "reason": reason}
            log(reason)
        write_manifest(manifest_path(fp16_path), manifest)
        manifests["model_fp16.onnx"] = manifest
        specs.append(EngineSpec(onnx="model_fp16.onnx", engine="model_fp16_typed.engine", precision="fp16",
                                layout=cfg.layout, height=cfg.height, width=cfg.width,
                                max_batch=options.max_engine_batch, strongly_typed=True))
    script = out / "build_engine.sh"
    atomic_write_text(script, build_engine_script(specs))
    script.chmod(0o777 & ~current_umask())  # executable, readable as far as the umask allows
    if options.tensorrt:
        manifests.update(build_engines(out, specs, calibration_samples, common, log))
    if failures:
        raise ParityError("export gate failed:\n  " + "\n  ".join(failures))
    return manifests


def build_engines(out: Path, specs, calibration_samples, common: dict, log) -> dict:
    """Build every engine the installed TensorRT can build, each with its manifest."""
    from dataclasses import replace

    from cpsl_tf.data.datasets import load_image
    from cpsl_tf.export.preprocess import batch_inputs
    from cpsl_tf.export.tensorrt_build import (
        CalibrationBatcher,
        build_engine,
        build_plan,
        import_tensorrt,
        major_version,
    )

    major = major_version(import_tensorrt().__version__)
    manifests = {}
    for spec in specs:
        try:
            build_plan(spec, major)
        except ValueError as err:
            log(f"skipping {spec.engine}: {err}")
            continue
        if major >= 11 and not spec.strongly_typed and spec.precision != "fp32":
            log(f"skipping {spec.engine}: TensorRT {major} builds {spec.precision} only from the typed ONNX")
            continue
        spec = replace(spec, onnx=str(out / spec.onnx), engine=str(out / spec.engine),
                       timing_cache=str(out / spec.timing_cache),
                       calibration_cache=str(out / spec.calibration_cache))
        batcher = None
        if spec.precision == "int8" and not spec.strongly_typed:
            size = (spec.height, spec.width)
            batcher = CalibrationBatcher(
                calibration_samples, 4,
                lambda chunk, size=size: batch_inputs([load_image(s.image) for s in chunk], size),
                spec.layout)
        info = build_engine(spec, batcher)
        manifest = make_manifest(artefact=spec.engine, kind="tensorrt", precision=spec.precision, **common,
                                 extra=info)
        write_manifest(manifest_path(spec.engine), manifest)
        manifests[Path(spec.engine).name] = manifest
        log(f"built {spec.engine} (TensorRT {info['tensorrt_version']}, {info['gpu']})")
    return manifests
