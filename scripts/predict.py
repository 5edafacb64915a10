"""Segment images, folders and videos with a checkpoint, an ONNX model or a TensorRT engine.

    python scripts/predict.py --model exports/x/model.onnx photos/ clip.mp4 --out predictions \
        [--label-ids] [--alpha 0.5] [--side-by-side] [--size 512 1024]

Per image: <name>_classes.png (train ids, or Cityscapes label ids with --label-ids) and <name>_overlay.png
(colour overlay with a legend). Per video: <name>_overlay.mp4 and, with --video-maps, one class PNG per frame.
Every backend uses the same preprocessing (cpsl_tf.export.preprocess); class maps are resized back to
each input's size with the nearest rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="*.weights.h5 checkpoint, *.onnx or *.engine")
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="model input size for a checkpoint (exported models carry their own)")
    parser.add_argument("--label-ids", action="store_true", help="write Cityscapes label ids, not train ids")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight in [0, 1]")
    parser.add_argument("--side-by-side", action="store_true", help="put the input beside the overlay")
    parser.add_argument("--no-legend", action="store_true")
    parser.add_argument("--no-overlay", action="store_true", help="write class maps only")
    parser.add_argument("--video-maps", action="store_true", help="also write a class PNG per video frame")
    return parser.parse_args(argv)


def expand_inputs(inputs) -> list[Path]:
    from cpsl_tf.export.samples import IMAGE_SUFFIXES

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{item}: folder has no images or videos")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return paths


class Predictor:
    def __init__(self, runner, args):
        self.runner = runner
        self.args = args

    def class_map(self, rgb):
        from cpsl_tf.export.preprocess import class_map_to_size, to_model_input

        batch = to_model_input(rgb, self.runner.input_size, self.runner.align_corners)[None]
        return class_map_to_size(self.runner(batch)["class_map"][0], rgb.shape[:2])

    def visual(self, rgb, class_map):
        from cpsl_tf.export.visualize import compose

        return compose(rgb, class_map, self.runner.class_names, self.args.alpha, self.args.side_by_side,
                       not self.args.no_legend)


def write_png(path: Path, image) -> None:
    import cv2

    from cpsl_tf.io_utils import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write {path}")


def predict_image(predictor: Predictor, path: Path, out: Path) -> None:
    import cv2

    from cpsl_tf.export.preprocess import read_rgb
    from cpsl_tf.export.visualize import class_map_png

    rgb = read_rgb(path)
    class_map = predictor.class_map(rgb)
    write_png(out / f"{path.stem}_classes.png",
              class_map_png(class_map, predictor.runner.num_classes, predictor.args.label_ids))
    if not predictor.args.no_overlay:
        write_png(out / f"{path.stem}_overlay.png",
                  cv2.cvtColor(predictor.visual(rgb, class_map), cv2.COLOR_RGB2BGR))


def predict_video(predictor: Predictor, path: Path, out: Path) -> int:
    import cv2

    from cpsl_tf.export.visualize import class_map_png
    from cpsl_tf.io_utils import atomic_path

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: OpenCV cannot open this video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = 0
    writer = None
    with atomic_path(out / f"{path.stem}_overlay.mp4") as tmp:
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                class_map = predictor.class_map(rgb)
                if predictor.args.video_maps:
                    png = class_map_png(class_map, predictor.runner.num_classes, predictor.args.label_ids)
                    write_png(out / f"{path.stem}_{frames:06d}_classes.png", png)
                visual = cv2.cvtColor(predictor.visual(rgb, class_map), cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (visual.shape[1], visual.shape[0]))
                writer.write(visual)
                frames += 1
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if frames == 0:
            raise OSError(f"{path}: no frames could be read")
    return frames


def main(argv=None) -> int:
    args = parse_args(argv)
    from cpsl_tf.export.runners import load_runner

    runner = load_runner(args.model, tuple(args.size) if args.size else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(runner, args)
    for path in expand_inputs(args.inputs):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            frames = predict_video(predictor, path, out)
            print(f"{path}: {frames} frames")
        else:
            predict_image(predictor, path, out)
            print(f"{path}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
