"""INT8 calibration reads its images batch by batch, and collecting them so changes no range."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from cpsl_tf.data.datasets import load_image
from cpsl_tf.export.onnx_export import export_onnx
from cpsl_tf.export.preprocess import batch_inputs
from cpsl_tf.export.quantize import QUANTIZED_OPS, ImageCalibrationReader, quantize_int8
from cpsl_tf.export.samples import folder_samples
from tests.export.conftest import standin_segmenter, write_image_folder

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
    # Without CalibStridedMinMax, ONNX Runtime collects every batch in one go.
    quantize_static(str(float_model), str(tmp_path / "one_pass.onnx"),
                    ImageCalibrationReader(calibration, "image", SIZE), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False})
    strided, one_pass = _scales(tmp_path / "strided.onnx"), _scales(tmp_path / "one_pass.onnx")
    assert strided.keys() == one_pass.keys() and len(strided) > 5
    for name, value in one_pass.items():
        np.testing.assert_allclose(strided[name], value, rtol=1e-6, err_msg=name)
