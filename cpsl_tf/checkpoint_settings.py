"""How to feed a checkpoint, as the run that trained it did: input size, target data, split, batch and the
normalisation inside the model.

They come from a config the user names (``--config``), else from the ``config.json`` of the checkpoint's run
folder (``<run>/<stage>/model.weights.h5``), else from the checkpoint's sidecar (input size, normalisation).
A command's flags override each, and the command prints one line of what it used and where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpsl_tf.config import Config, ConfigError, ExportConfig, load_config
from cpsl_tf.run_config import CONFIG_NAME, checkpoint_run, read_run_config

# What a checkpoint outside its run folder, with a sidecar that does not say (a converted official one), is
# fed: the paper's 1024x2048 Cityscapes frames.
DEFAULT_INPUT_SIZE = (ExportConfig.height, ExportConfig.width)


@dataclass(frozen=True)
class CheckpointSettings:
    """What is known about feeding one checkpoint; ``cfg`` is ``None`` when no config was found."""

    origin: str
    cfg: Config | None
    meta: dict

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the run evaluated the network at (``data.target_size``), else the sidecar's input_size."""
        size = self.cfg.data.target_size if self.cfg is not None else self.meta.get("input_size")
        return (int(size[0]), int(size[1])) if size else None

    @property
    def export_size(self) -> tuple[int, int] | None:
        """(H, W) of the run's ``export`` section, else :attr:`input_size`."""
        if self.cfg is not None:
            return self.cfg.export.height, self.cfg.export.width
        return self.input_size

    @property
    def normalisation(self) -> str:
        model = self.meta.get("model") or {}
        mean, std = model.get("input_mean", [0.0] * 3), model.get("input_std", [1.0] * 3)
        return f"normalisation mean {mean} std {std} (inside the model)"

    def line(self, used: list[str]) -> str:
        """The line a command prints: the ``used`` settings and where those no flag gave came from."""
        used = ", ".join([*used, self.normalisation])
        return f"settings: {used} (from {self.origin} where no flag gave them)"


def size_text(size: tuple[int, int] | None) -> str:
    return "each image's own size" if size is None else f"{size[0]}x{size[1]}"


def checkpoint_settings(checkpoint: str | Path, meta: dict, config: str | Path | None = None,
                        overrides: list[str] | None = None) -> CheckpointSettings:
    """The settings of ``checkpoint`` (its sidecar ``meta``): from ``config`` with ``overrides`` when given,
    else from its run folder, else from the sidecar alone."""
    if config is not None:
        cfg, origin = load_config(config, overrides), str(config)
    else:
        if overrides:
            raise ConfigError("--set changes a config given with --config; pass --config too")
        run = checkpoint_run(checkpoint, meta)
        if run is None:
            return CheckpointSettings(f"the sidecar of {checkpoint}", None, meta)
        cfg, origin = read_run_config(run), str(run / CONFIG_NAME)
    classes = meta.get("num_classes")
    if classes not in (None, cfg.data.num_classes):
        raise ConfigError(f"{origin}: sets data.num_classes={cfg.data.num_classes}, the checkpoint "
                          f"{checkpoint} has {classes} classes")
    return CheckpointSettings(origin, cfg, meta)
