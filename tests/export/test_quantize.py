"""INT8 calibration reads its images batch by batch, and collecting them so changes no range."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from cpsl_tf.data.datasets import load_image
from cpsl_tf.export.onnx_export import export_onnx
from cpsl_tf.export.preprocess import batch_inputs
from cpsl_tf.export.quantize import (
    QUANTIZED_OPS,
    CalibrationError,
    ImageCalibrationReader,
    crop_origins,
    quantize_int8,
    tensor_name_map,
)
from cpsl_tf.export.runners import OnnxRunner
from cpsl_tf.export.samples import folder_samples
from tests.export.conftest import NUM_CLASSES, standin_segmenter, write_image_folder

SIZE = (32, 48)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    images, _ = write_image_folder(tmp_path_factory.mktemp("calib"), 5, size=(40, 72), seed=3)
    return folder_samples(images)


def test_a_range_of_batches_is_read_with_the_export_preprocessing(calibration):
    reader = ImageCalibrationReader(calibration, "image", SIZE, batch_size=2)
    assert len(reader) == 3
    reader.set_range(1, 2)
    (batch,) = list(reader)
    expected = batch_inputs([load_image(s.image) for s in calibration[2:4]], SIZE)
    np.testing.assert_allclose(batch["image"], expected, atol=1e-6)
    reader.set_range(2, 3)
    assert [b["image"].shape[0] for b in reader] == [1]


def _minmax_in_one_pass(model, output, reader):
    """ONNX Runtime's own quantisation with quantize_int8's settings, without CalibStridedMinMax (every
    batch collected in one go) or crops carried over."""
    quantize_static(str(model), str(output), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False})


def _scales(path) -> dict:
    model = onnx.load(str(path))
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
            if i.name.endswith("_scale")}


class _CountingReader(ImageCalibrationReader):
    """Records how many batches the calibrator draws from each range it sets."""

    drawn: list[int] = []

    def set_range(self, start_index, end_index):
        self.drawn.append(0)
        super().set_range(start_index, end_index)

    def get_next(self):
        batch = super().get_next()
        self.drawn[-1] += batch is not None
        return batch


def test_calibration_collects_batch_by_batch_and_gives_the_one_pass_ranges(calibration, tmp_path,
                                                                           monkeypatch):
    float_model = tmp_path / "model.onnx"
    export_onnx(standin_segmenter(), float_model, height=SIZE[0], width=SIZE[1])
    monkeypatch.setattr("cpsl_tf.export.quantize.ImageCalibrationReader", _CountingReader)
    quantize_int8(float_model, tmp_path / "strided.onnx", calibration, size=SIZE, method="minmax")
    assert sum(_CountingReader.drawn) == len(calibration) and max(_CountingReader.drawn) == 1
    one_pass_reader = ImageCalibrationReader(calibration, "image", SIZE)
    _minmax_in_one_pass(float_model, tmp_path / "one_pass.onnx", one_pass_reader)
    strided, one_pass = _scales(tmp_path / "strided.onnx"), _scales(tmp_path / "one_pass.onnx")
    assert strided.keys() == one_pass.keys() and len(strided) > 5
    for name, value in one_pass.items():
        np.testing.assert_allclose(strided[name], value, rtol=1e-6, err_msg=name)


def test_crops_cover_the_image_evenly():
    assert crop_origins((32, 48), (16, 24)) == [(0, 0), (0, 24), (16, 0), (16, 24)]
    assert crop_origins((40, 48), (16, 48)) == [(0, 0), (12, 0), (24, 0)]
    assert crop_origins((32, 48), (32, 48)) == [(0, 0)]
    with pytest.raises(CalibrationError, match="crops of 64x24 do not fit in the 32x48 input"):
        crop_origins((32, 48), (64, 24))


def test_the_reader_cuts_each_image_into_its_crops(calibration):
    reader = ImageCalibrationReader(calibration[:2], "image", SIZE, crop=(16, 24), batch_size=3)
    assert len(reader) == 3  # 2 images x 4 crops, 3 at a time
    crops = np.concatenate([b["image"] for b in reader])
    whole = batch_inputs([load_image(s.image) for s in calibration[:2]], SIZE)
    np.testing.assert_allclose(crops[5], whole[1][:16, 24:], atol=1e-6)


def _activation_scales(path) -> list:
    model = onnx.load(str(path))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [values[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"]


def test_ranges_measured_on_crops_are_carried_over_node_by_node(tiny_model, calibration, tmp_path):
    model, _ = tiny_model
    full, small = tmp_path / "full.onnx", tmp_path / "small.onnx"
    export_onnx(model, full, height=SIZE[0], width=SIZE[1])
    export_onnx(model, small, height=16, width=24)
    names = tensor_name_map(onnx.load(str(small)), onnx.load(str(full)))
    assert any(a != b for a, b in names.items())  # tf2onnx's generated names differ between the sizes
    info = quantize_int8(full, tmp_path / "int8.onnx", calibration, size=SIZE, method="minmax",
                         calibration_model=small)
    assert info["calibration_crops"] == "16x24"
    # The same crops calibrate the small graph directly: its activation ranges are the carried-over ones.
    _minmax_in_one_pass(small, tmp_path / "small_int8.onnx",
                        ImageCalibrationReader(calibration, "image", SIZE, crop=(16, 24)))
    carried = _activation_scales(tmp_path / "int8.onnx")
    direct = _activation_scales(tmp_path / "small_int8.onnx")
    assert len(carried) == len(direct) > 5
    for a, b in zip(carried, direct):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    x = batch_inputs([load_image(s.image) for s in calibration[:2]], SIZE)
    manifest = {"input": {"layout": "nhwc", "shape": ["batch", *SIZE, 3]}, "num_classes": NUM_CLASSES,
                "class_names": [str(i) for i in range(NUM_CLASSES)]}
    quantized = OnnxRunner(tmp_path / "int8.onnx", manifest)(x)["class_map"]
    assert quantized.shape == (2, *SIZE)


def test_a_calibration_model_of_another_network_is_refused(tiny_model, calibration, tmp_path):
    model, _ = tiny_model
    export_onnx(model, tmp_path / "full.onnx", height=SIZE[0], width=SIZE[1])
    export_onnx(standin_segmenter(), tmp_path / "other.onnx", height=16, width=24)
    with pytest.raises(CalibrationError, match="not the exported graph at another size"):
        quantize_int8(tmp_path / "full.onnx", tmp_path / "int8.onnx", calibration, size=SIZE,
                      calibration_model=tmp_path / "other.onnx")
