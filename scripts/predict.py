"""Segment images, folders and videos with a checkpoint, an ONNX model or a TensorRT engine.

    python scripts/predict.py --model exports/x/model.onnx photos/ clip.mp4 --out predictions \
        [--label-ids] [--alpha 0.5] [--side-by-side] [--size 512 1024]

Per image: <name>_classes.png (train ids, or Cityscapes label ids with --label-ids) and <name>_overlay.png
(colour overlay with a legend). Per video: <name>_overlay.mp4 and, with --video-maps, one class PNG per frame.
Every backend uses the same preprocessing (cpsl_tf.export.preprocess); class maps are resized back to
each input's size with the nearest rule.

At the end it prints what the model costs per frame on this machine: the median milliseconds of the model
call (Keras, ONNX Runtime or TensorRT at the model's input size, batch 1) and the frames per second that
makes, with the first call apart (it includes warm-up: tracing, session and allocator start); and the
end-to-end rate with reading, resizing and writing.

A checkpoint is fed at the input size of the run that trained it (the run folder's config.json, else the
sidecar's input_size, else 1024x2048); --size overrides it. Exported models carry their own size. The size
used is printed.

Inputs are not trusted. An image's size is read from its header before it is decoded, and an image or video
frame above --max-pixels (default 64 megapixels) is refused; so is a file that is not a readable image or
video. Such inputs are skipped with a message naming them, the others are processed, and the exit code is 1
(with --strict the first one stops the run, exit code 2). A model that cannot be loaded, or that predicts a
class id outside its manifest's classes, stops the run with one message and exit code 2 (nothing is written
for the image that showed it).

Exit codes: 0 every input done; 1 some inputs skipped (named), or a bug (traceback); 2 no complete run: a
missing or damaged model, missing inputs, an unwritable output, a full disk (one message); 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.command import UserError, add_verbose_flag, run_command  # noqa: E402

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# 64 megapixels: an 8000x8000 photo. Decoding one to RGB takes 192 MB, the float32 model input made from it
# 768 MB; a 1.2 MB PNG can declare 20000x20000 (4.5 GiB of buffers).
DEFAULT_MAX_PIXELS = 64_000_000


class InputError(UserError):
    """An input image or video that cannot be used (unreadable, too large): skipped, reported."""


class ModelError(UserError):
    """The model cannot be loaded, fails, or predicts what its manifest does not allow: the run stops."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/predict.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a *.weights.h5 checkpoint (with its sidecar .json), an exported *.onnx or a "
                             "TensorRT *.engine / *.plan (with its manifest)")
    parser.add_argument("inputs", nargs="+",
                        help="image files, folders of images and videos (not searched recursively), video "
                             f"files ({', '.join(VIDEO_SUFFIXES)})")
    parser.add_argument("--out", required=True, help="output folder (made if missing)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="input size of a checkpoint (default: its run's data.target_size, else its "
                             "sidecar's input_size, else 1024 2048); exported models carry their own")
    parser.add_argument("--label-ids", action="store_true",
                        help="write Cityscapes label ids in the class PNGs (default: train ids 0..C-1)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="overlay colour weight in [0, 1] (default: %(default)s)")
    parser.add_argument("--side-by-side", action="store_true", help="put the input beside the overlay")
    parser.add_argument("--no-legend", action="store_true", help="no class legend beside the overlay")
    parser.add_argument("--no-overlay", action="store_true", help="write class maps only")
    parser.add_argument("--video-maps", action="store_true", help="also write a class PNG per video frame")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse images and video frames with more pixels (width x height), checked on "
                             "the header before decoding (default: %(default)d)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable or refused input (exit code 2) instead of "
                             "skipping it")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.max_pixels < 1:
        parser.error(f"--max-pixels must be positive, got {args.max_pixels}")
    return args


def expand_inputs(inputs) -> list[Path]:
    from cpsl_tf.export.samples import IMAGE_SUFFIXES
    from cpsl_tf.user_paths import MissingPathError, did_you_mean

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"{item}: folder has no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
                                 f"({', '.join(VIDEO_SUFFIXES)})")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise MissingPathError(f"{item}: no such file or folder; expected an image, a folder of images "
                                   f"or a video{did_you_mean(item)}")
    return paths


def checkpoint_input(path, size) -> tuple[tuple[int, int], str]:
    """The input size of a checkpoint: ``size`` when given, else its run's; and the line that says so."""
    from cpsl_tf.checkpoint_settings import DEFAULT_INPUT_SIZE, checkpoint_settings, size_text
    from cpsl_tf.models.checkpoint import read_checkpoint_meta
    from cpsl_tf.user_paths import require_file

    require_file(path, "a checkpoint: <name>.weights.h5 with its sidecar <name>.json")
    settings = checkpoint_settings(path, read_checkpoint_meta(path))
    size = tuple(size) if size else settings.input_size
    if size is None:
        return DEFAULT_INPUT_SIZE, settings.line([f"input {size_text(DEFAULT_INPUT_SIZE)}, the default: "
                                                  "nothing says this checkpoint's (--size H W to set it)"])
    return size, settings.line([f"input {size_text(size)}"])


def load_model(path, size):
    """The runner of ``path``; anything that keeps it from loading is a :class:`ModelError` naming the file
    (a model file is untrusted input: ONNX Runtime, h5py, TensorRT and the manifest reader each fail in their
    own way). Prints the input size used."""
    from cpsl_tf.export.runners import load_runner

    try:
        if str(path).endswith(".weights.h5"):
            size, line = checkpoint_input(path, size)
            runner = load_runner(path, size)
        else:
            runner = load_runner(path)
            height, width = runner.input_size
            line = f"settings: input {height}x{width} (from its manifest" + (
                "; --size applies to checkpoints only)" if size else ")")
        print(line)
        return runner
    except FileNotFoundError as err:  # the model file, or its manifest
        text = str(err)
        raise ModelError(text if text.startswith(str(path)) else f"{path}: cannot load this model: {text}"
                         ) from None
    except Exception as err:  # every failure to load is reported the same way
        raise ModelError(f"{path}: cannot load this model, damaged or not a model of this project "
                         f"({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def check_pixels(path: Path, width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width * height > max_pixels:
        raise InputError(f"{path}: {what} of {width}x{height} = {_megapixels(width * height)} is above the "
                         f"limit of {_megapixels(max_pixels)}; raise --max-pixels to process it")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels; :class:`InputError` when the
    file is not an image Pillow recognises."""
    from PIL import Image, UnidentifiedImageError

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # --max-pixels is the limit here, not Pillow's decompression-bomb check
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image file (no image format Pillow knows, or an incomplete "
                         "header)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{path}: not a readable image file ({_first_line(err)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_image(path: Path, max_pixels: int):
    """(H, W, 3) uint8 RGB of an image file whose header passed the pixel limit."""
    from cpsl_tf.export.preprocess import read_rgb

    width, height = image_size(path)
    check_pixels(path, width, height, max_pixels)
    try:
        rgb = read_rgb(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not a readable image file (the header is there, the pixel data cannot be "
                         "decoded: truncated or damaged)") from None
    if rgb.shape[:2] != (height, width):
        raise InputError(f"{path}: decoded as {rgb.shape[1]}x{rgb.shape[0]}, its header says "
                         f"{width}x{height}")
    return rgb


class FrameTimes:
    """Wall times of the model calls and of whole frames (read, preprocess, model, write)."""

    def __init__(self):
        self.model_seconds: list[float] = []
        self.frame_seconds: list[float] = []

    def summary(self) -> str:
        import numpy as np

        if not self.model_seconds:
            return "timing: no frame was processed"
        first = 1000 * self.model_seconds[0]
        if len(self.model_seconds) == 1:
            return (f"timing: 1 frame, model {first:.1f} ms including warm-up (give more frames for a "
                    "steady-state rate)")
        steady = 1000 * float(np.median(self.model_seconds[1:]))
        text = (f"timing: model {steady:.1f} ms/frame median ({1000 / steady:.1f} FPS) over "
                f"{len(self.model_seconds) - 1} frames after the first ({first:.1f} ms, warm-up)")
        if len(self.frame_seconds) > 1:
            end_to_end = float(np.median(self.frame_seconds[1:]))
            text += f"; end to end with reading, resizing and writing {1 / end_to_end:.1f} frames/s"
        return text


class Predictor:
    def __init__(self, runner, args):
        self.runner = runner
        self.args = args
        self.times = FrameTimes()

    def class_map(self, rgb, source: Path | None = None):
        """The class map of ``rgb`` at its size; :class:`ModelError` when the model fails or predicts a class
        id outside ``0..num_classes-1`` of its manifest."""
        from cpsl_tf.export.preprocess import class_map_to_size, to_model_input

        batch = to_model_input(rgb, self.runner.input_size)[None]
        where = f" on {source}" if source is not None else ""
        start = time.perf_counter()
        try:
            out = self.runner(batch)
        except Exception as err:  # a model that fails on a valid batch is broken
            raise ModelError(f"{self.args.model}: the model failed{where} ({_first_line(err)})") from None
        self.times.model_seconds.append(time.perf_counter() - start)
        check_outputs(out, self.runner.num_classes, self.args.model, where)
        return class_map_to_size(out["class_map"][0], rgb.shape[:2])

    def visual(self, rgb, class_map):
        from cpsl_tf.export.visualize import compose

        return compose(rgb, class_map, self.runner.class_names, self.args.alpha, self.args.side_by_side,
                       not self.args.no_legend)


def check_outputs(out: dict, num_classes: int, model, where: str = "") -> None:
    """Class ids in ``0..num_classes-1`` and, when there are logits, one channel per class of the manifest."""
    import numpy as np

    logits = out.get("logits")
    if logits is not None and logits.shape[-1] != num_classes:
        raise ModelError(f"{model}: the model gives {logits.shape[-1]} logit channels{where}, its manifest "
                         f"lists {num_classes} classes: the model and its manifest do not belong together")
    class_map = np.asarray(out["class_map"])
    if class_map.size and (class_map.min() < 0 or class_map.max() >= num_classes):
        bad = int(class_map.max() if class_map.max() >= num_classes else class_map.min())
        raise ModelError(f"{model}: the model predicted class id {bad}{where}, its manifest lists "
                         f"{num_classes} classes (ids 0-{num_classes - 1}): the model and its manifest do "
                         "not belong together")


def write_png(path: Path, image) -> None:
    import cv2

    from cpsl_tf.io_utils import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(errno.EIO, "OpenCV could not write this image", str(path))


def predict_image(predictor: Predictor, path: Path, out: Path) -> None:
    import cv2

    from cpsl_tf.export.visualize import class_map_png

    start = time.perf_counter()
    rgb = read_image(path, predictor.args.max_pixels)
    class_map = predictor.class_map(rgb, path)
    write_png(out / f"{path.stem}_classes.png",
              class_map_png(class_map, predictor.runner.num_classes, predictor.args.label_ids))
    if not predictor.args.no_overlay:
        write_png(out / f"{path.stem}_overlay.png",
                  cv2.cvtColor(predictor.visual(rgb, class_map), cv2.COLOR_RGB2BGR))
    predictor.times.frame_seconds.append(time.perf_counter() - start)


def predict_video(predictor: Predictor, path: Path, out: Path) -> int:
    import cv2

    from cpsl_tf.export.visualize import class_map_png
    from cpsl_tf.io_utils import atomic_path

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: not a readable video (OpenCV cannot open it)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_pixels(path, width, height, predictor.args.max_pixels, "video frame")
    except InputError:
        capture.release()
        raise
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = 0
    writer = None
    with atomic_path(out / f"{path.stem}_overlay.mp4") as tmp:
        try:
            while True:
                start = time.perf_counter()
                ok, bgr = capture.read()
                if not ok:
                    break
                check_pixels(path, bgr.shape[1], bgr.shape[0], predictor.args.max_pixels, "video frame")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                class_map = predictor.class_map(rgb, path)
                if predictor.args.video_maps:
                    png = class_map_png(class_map, predictor.runner.num_classes, predictor.args.label_ids)
                    write_png(out / f"{path.stem}_{frames:06d}_classes.png", png)
                visual = cv2.cvtColor(predictor.visual(rgb, class_map), cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (visual.shape[1], visual.shape[0]))
                writer.write(visual)
                predictor.times.frame_seconds.append(time.perf_counter() - start)
                frames += 1
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if frames == 0:
            raise InputError(f"{path}: not a readable video (no frame could be read)")
    return frames


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(lambda: predict(args), verbose=args.verbose)


def predict(args) -> int:
    """0: every input done; 1: some inputs were refused or unreadable (named, skipped)."""
    runner = load_model(args.model, args.size)
    paths = expand_inputs(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(runner, args)
    skipped = 0
    for path in paths:
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                frames = predict_video(predictor, path, out)
                print(f"{path}: {frames} frames")
            else:
                predict_image(predictor, path, out)
                print(f"{path}: done")
        except InputError as err:
            if args.strict:
                raise
            print(f"skipped: {err}", file=sys.stderr)
            skipped += 1
    print(predictor.times.summary())
    if skipped:
        print(f"{skipped} of {len(paths)} inputs skipped (named above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
