"""Augmenters from DeepHealth's (ECVL's) augmentation text syntax.

The syntax, as ECVL's ``AugmentationFactory`` reads it::

    SequentialAugmentationContainer
        AugResizeDim dims=(224,224) interp="linear"
        AugRotate angle=[-5,5] center=(0,0) interp="linear"
        OneOfAugmentationContainer p=0.3
            AugElasticTransform alpha=[10,20] sigma=[2,4]
            AugGridDistortion num_steps=[2,5] distort_limit=[-0.3,0.3]
        end
        AugAdditiveLaplaceNoise std_dev=[0,0.51]
    end

* an augmentation is its name followed by ``name=value`` parameters on the same line;
* values are ranges ``[a,b]`` (drawn uniformly on every application), vectors ``(a,b,...)``,
  strings ``"text"`` or numbers;
* ``SequentialAugmentationContainer`` applies its children in order;
  ``OneOfAugmentationContainer p=<number>`` picks one child uniformly and applies it with
  probability ``p``; both end with ``end`` and nest.

Every name of ECVL's catalogue maps to a digipath augmenter (:data:`CATALOGUE`). Unlike ECVL,
an unknown augmentation or parameter name is an error naming the line and listing the valid
names, an omitted optional parameter takes its documented default (ECVL sometimes reused the
previous parameter's value), and angles keep ECVL's clockwise convention in the text.
Coordinates in the text are ``(x, y)`` / ``(width, height)`` as in ECVL; digipath's own
augmenters take ``(rows, cols)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digipath.augment.base import Augmenter
from digipath.augment.colour import Brightness, Gamma
from digipath.augment.containers import OneOf, Sequential
from digipath.augment.deform import Elastic, GridDistortion, OpticalDistortion
from digipath.augment.filters import GaussianBlur
from digipath.augment.intensity import Normalize, ScaleFromTo, ScaleTo, ToFloat32
from digipath.augment.noise import (
    AdditiveLaplaceNoise,
    AdditivePoissonNoise,
    CoarseDropout,
    SaltAndPepper,
)
from digipath.augment.resize import Crop, Resize
from digipath.augment.spatial import Flip, Rotate, Transpose
from digipath.errors import AugmentationConfigError, AugmentationError

SEQUENTIAL = "SequentialAugmentationContainer"
ONE_OF = "OneOfAugmentationContainer"
END = "end"

RANGE, VECTOR, NUMBER, STRING = "range", "vector", "number", "string"

_ORDER = {"nearest": 0, "linear": 1, "area": 1, "cubic": 3, "lanczos4": 4}
_BORDERS = ("constant", "replicate", "reflect", "wrap", "reflect_101", "reflect101", "transparent")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a catalogue entry: accepted value kinds and whether it is required."""

    kinds: tuple[str, ...]
    required: bool = False


@dataclass(frozen=True)
class Entry:
    """A catalogue entry: the parameters and how to build the digipath augmenter."""

    parameters: dict[str, Parameter]
    build: Callable[[dict[str, Any]], Augmenter]
    summary: str


def _req(*kinds: str) -> Parameter:
    return Parameter(kinds, True)


def _opt(*kinds: str) -> Parameter:
    return Parameter(kinds, False)


def _wh(vector: Sequence[float], what: str) -> tuple[int, int]:
    """(width, height[, ...]) from the text to (rows, cols)."""
    if len(vector) < 2:
        raise AugmentationError(f"{what} must be (width, height), got {tuple(vector)}")
    return round(vector[1]), round(vector[0])


def _interp(params: dict[str, Any], default: str = "linear") -> str:
    return params.get("interp", default)


def _gt_interp(params: dict[str, Any], name: str) -> None:
    value = params.get("gt_interp", "nearest")
    if value != "nearest":
        raise AugmentationError(
            f'{name}: gt_interp must be "nearest": digipath moves label maps with nearest '
            f"interpolation only (interpolated class values are not classes), got {value!r}"
        )


def _border(params: dict[str, Any], default: str) -> str:
    value = params.get("border_type", default)
    if value not in _BORDERS:
        raise AugmentationError(
            f"border_type must be one of {', '.join(map(repr, _BORDERS))}, got {value!r}"
        )
    return "reflect_101" if value == "reflect101" else value


def _with_probability(augmenter: Augmenter, params: dict[str, Any]) -> Augmenter:
    return OneOf([augmenter], p=params.get("p", 0.5))


def _rotate(params):
    _gt_interp(params, "AugRotate")
    low, high = params["angle"]
    centre = params.get("center")
    if centre is not None:
        if len(centre) != 2:
            raise AugmentationError(f"AugRotate: center must be (x, y), got {tuple(centre)}")
        centre = (float(centre[1]), float(centre[0]))
    # ECVL angles are clockwise; digipath's are counter-clockwise.
    return Rotate(
        angle=(-high, -low),
        centre=centre,
        scale=params.get("scale", 1.0),
        interpolation=_interp(params),
        border="constant",
        border_value=0.0,
    )


def _resize_dim(params):
    _gt_interp(params, "AugResizeDim")
    return Resize(shape=_wh(params["dims"], "AugResizeDim: dims"), interpolation=_interp(params))


def _resize_scale(params):
    _gt_interp(params, "AugResizeScale")
    scale = params["scale"]
    if len(scale) == 1:
        scale = (scale[0], scale[0])
    if len(scale) < 2:
        raise AugmentationError(f"AugResizeScale: scale must be (x, y), got {tuple(scale)}")
    return Resize(factor=(float(scale[1]), float(scale[0])), interpolation=_interp(params))


def _elastic(params):
    return Elastic(
        sigma=params["sigma"],
        alpha=params["alpha"],
        order=_ORDER[_interp(params)],
        border=_border(params, "reflect_101"),
        border_value=params.get("border_value", 0.0),
    )


def _grid(params):
    return GridDistortion(
        num_steps=tuple(int(v) for v in params["num_steps"]),
        distort_limit=params["distort_limit"],
        interpolation=_interp(params),
        border=_border(params, "reflect_101"),
        border_value=params.get("border_value", 0.0),
    )


def _optical(params):
    return OpticalDistortion(
        distort_limit=params["distort_limit"],
        shift_limit=params["shift_limit"],
        interpolation=_interp(params),
        border=_border(params, "reflect_101"),
        border_value=params.get("border_value", 0.0),
    )


def _salt(mode: str):
    def build(params):
        return SaltAndPepper(p=params["p"], per_channel=params["per_channel"], mode=mode)

    return build


def _normalize(params):
    mean, std = params["mean"], params["std"]
    if isinstance(mean, tuple) != isinstance(std, tuple):
        raise AugmentationError("AugNormalize: mean and std must both be numbers or vectors")
    return Normalize(mean=mean, std=std)


def _centre_crop(params):
    size = params.get("size")
    return Crop(size=None if size is None else _wh(size, "AugCenterCrop: size"))


def _random_crop(params):
    return Crop(
        size=_wh(params["size"], "AugRandomCrop: size"),
        position="random",
        border=_border(params, "constant"),
        border_value=params.get("border_value", 0.0),
    )


def _to_float(params):
    return ToFloat32(
        divisor=params.get("divisor", 1.0), label_divisor=params.get("divisor_gt", None)
    )


_INTERP_PARAMS = {"interp": _opt(STRING), "gt_interp": _opt(STRING)}
_DISTORT_PARAMS = {
    "interp": _opt(STRING),
    "border_type": _opt(STRING),
    "border_value": _opt(NUMBER),
}

CATALOGUE: dict[str, Entry] = {
    "AugRotate": Entry(
        {"angle": _req(RANGE), "center": _opt(VECTOR), "scale": _opt(NUMBER), **_INTERP_PARAMS},
        _rotate,
        "rotate by an angle in degrees (clockwise) drawn from a range",
    ),
    "AugResizeDim": Entry(
        {"dims": _req(VECTOR), **_INTERP_PARAMS}, _resize_dim, "resize to (width, height)"
    ),
    "AugResizeScale": Entry(
        {"scale": _req(VECTOR), **_INTERP_PARAMS}, _resize_scale, "resize by (x, y) factors"
    ),
    "AugFlip": Entry(
        {"p": _opt(NUMBER)},
        lambda p: _with_probability(Flip(flips=["vertical"]), p),
        "flip up-down with probability p",
    ),
    "AugMirror": Entry(
        {"p": _opt(NUMBER)},
        lambda p: _with_probability(Flip(flips=["horizontal"]), p),
        "flip left-right with probability p",
    ),
    "AugTranspose": Entry(
        {"p": _opt(NUMBER)},
        lambda p: _with_probability(Transpose(), p),
        "swap rows and columns with probability p",
    ),
    "AugGaussianBlur": Entry(
        {"sigma": _req(RANGE)}, lambda p: GaussianBlur(sigma=p["sigma"]), "Gaussian blur"
    ),
    "AugAdditiveLaplaceNoise": Entry(
        {"std_dev": _req(RANGE)},
        lambda p: AdditiveLaplaceNoise(scale=p["std_dev"]),
        "add Laplace noise of the drawn scale (grey levels)",
    ),
    "AugAdditivePoissonNoise": Entry(
        {"lambda": _req(RANGE)},
        lambda p: AdditivePoissonNoise(lam=p["lambda"]),
        "add Poisson noise of the drawn lambda",
    ),
    "AugGammaContrast": Entry(
        {"gamma": _req(RANGE)}, lambda p: Gamma(gamma=p["gamma"]), "gamma curve"
    ),
    "AugCoarseDropout": Entry(
        {"p": _req(RANGE), "drop_size": _req(RANGE), "per_channel": _req(NUMBER)},
        lambda p: CoarseDropout(p=p["p"], drop_size=p["drop_size"], per_channel=p["per_channel"]),
        "zero grid rectangles with probability p",
    ),
    "AugBrightness": Entry(
        {"beta": _req(RANGE)}, lambda p: Brightness(beta=p["beta"]), "add beta grey levels"
    ),
    "AugGridDistortion": Entry(
        {"num_steps": _req(RANGE), "distort_limit": _req(RANGE), **_DISTORT_PARAMS},
        _grid,
        "grid distortion",
    ),
    "AugElasticTransform": Entry(
        {"alpha": _req(RANGE), "sigma": _req(RANGE), **_DISTORT_PARAMS},
        _elastic,
        "elastic deformation",
    ),
    "AugOpticalDistortion": Entry(
        {"distort_limit": _req(RANGE), "shift_limit": _req(RANGE), **_DISTORT_PARAMS},
        _optical,
        "barrel/pincushion distortion",
    ),
    "AugSalt": Entry(
        {"p": _req(RANGE), "per_channel": _req(NUMBER)}, _salt("salt"), "white pixels"
    ),
    "AugPepper": Entry(
        {"p": _req(RANGE), "per_channel": _req(NUMBER)}, _salt("pepper"), "black pixels"
    ),
    "AugSaltAndPepper": Entry(
        {"p": _req(RANGE), "per_channel": _req(NUMBER)},
        _salt("both"),
        "white or black pixels",
    ),
    "AugNormalize": Entry(
        {"mean": _req(NUMBER, VECTOR), "std": _req(NUMBER, VECTOR)},
        _normalize,
        "(x - mean) / std, globally or per channel (float output)",
    ),
    "AugCenterCrop": Entry({"size": _opt(VECTOR)}, _centre_crop, "centre crop to (width, height)"),
    "AugToFloat32": Entry(
        {"divisor": _opt(NUMBER), "divisor_gt": _opt(NUMBER)},
        _to_float,
        "convert to float32 and divide",
    ),
    "AugDivBy255": Entry(
        {},
        lambda p: ToFloat32(divisor=255.0, label_divisor=255.0),
        "divide image and ground truth by 255 (float output)",
    ),
    "AugScaleTo": Entry(
        {"new_min": _req(NUMBER), "new_max": _req(NUMBER)},
        lambda p: ScaleTo(new_min=p["new_min"], new_max=p["new_max"]),
        "rescale the patch's [min, max] to [new_min, new_max] (float output)",
    ),
    "AugScaleFromTo": Entry(
        {
            "old_min": _req(NUMBER),
            "old_max": _req(NUMBER),
            "new_min": _req(NUMBER),
            "new_max": _req(NUMBER),
        },
        lambda p: ScaleFromTo(
            old_min=p["old_min"], old_max=p["old_max"], new_min=p["new_min"], new_max=p["new_max"]
        ),
        "linear map [old_min, old_max] -> [new_min, new_max], clamped (float output)",
    ),
    "AugRandomCrop": Entry(
        {"size": _req(VECTOR), "border_type": _opt(STRING), "border_value": _opt(NUMBER)},
        _random_crop,
        "crop (width, height) at a random position, padding when larger",
    ),
}
"""ECVL's augmentation catalogue: text name -> parameters and digipath builder."""

CONTAINER_NAMES = (SEQUENTIAL, ONE_OF)


# -- scanning -------------------------------------------------------------------------------


class _Scanner:
    """Reads names (across lines) and ``name=value`` parameters (up to the end of a line)."""

    def __init__(self, text: str, source: str | None) -> None:
        self.text = text
        self.pos = 0
        self.source = source

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, where: str, reason: str, line: int | None = None) -> AugmentationConfigError:
        return AugmentationConfigError(f"line {line or self.line}: {where}", reason, self.source)

    def _skip(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text) and text[self.pos].isspace():
            if text[self.pos] == "\n" and not newlines:
                return
            self.pos += 1

    def at_end(self) -> bool:
        self._skip(True)
        return self.pos >= len(self.text)

    def name(self) -> tuple[str, int]:
        """The next whitespace-separated token and its line."""
        self._skip(True)
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace():
            self.pos += 1
        return self.text[start : self.pos], self.text.count("\n", 0, start) + 1

    def parameters(self, owner: str) -> dict[str, tuple[str, Any]]:
        """``{name: (kind, value)}`` for the rest of the current line."""
        params: dict[str, tuple[str, Any]] = {}
        text = self.text
        while True:
            self._skip(False)
            if self.pos >= len(text) or text[self.pos] == "\n":
                return params
            start = self.pos
            while self.pos < len(text) and not text[self.pos].isspace() and text[self.pos] != "=":
                self.pos += 1
            name = text[start : self.pos]
            self._skip(False)
            if self.pos >= len(text) or text[self.pos] != "=":
                if name in CATALOGUE or name in CONTAINER_NAMES or name == END:
                    # the next augmentation on the same line (a flattened text)
                    self.pos = start
                    return params
                raise self.error(
                    owner, f"expected a parameter 'name=value', got {name!r} without '='"
                )
            self.pos += 1
            self._skip(False)
            if name in params:
                raise self.error(f"{owner}.{name}", "parameter given twice")
            params[name] = self._value(owner, name)

    def _value(self, owner: str, name: str) -> tuple[str, Any]:
        text = self.text
        if self.pos >= len(text) or text[self.pos] == "\n":
            raise self.error(f"{owner}.{name}", "missing value after '='")
        first = text[self.pos]
        if first in "[(":
            close = "]" if first == "[" else ")"
            end = text.find(close, self.pos)
            newline = text.find("\n", self.pos)
            if end < 0 or (0 <= newline < end):
                raise self.error(f"{owner}.{name}", f"cannot read the value: no closing {close!r}")
            body = text[self.pos + 1 : end]
            self.pos = end + 1
            try:
                numbers = tuple(float(part) for part in body.split(",") if part.strip() != "")
            except ValueError:
                raise self.error(
                    f"{owner}.{name}", f"cannot read the value {first}{body}{close}: not numbers"
                ) from None
            if first == "[":
                if len(numbers) != 2:
                    raise self.error(f"{owner}.{name}", f"a range must be [min,max], got [{body}]")
                if numbers[0] > numbers[1]:
                    raise self.error(f"{owner}.{name}", f"range [{body}] has min > max")
                return RANGE, numbers
            if not numbers:
                raise self.error(f"{owner}.{name}", "an empty vector ()")
            return VECTOR, numbers
        if first == '"':
            end = text.find('"', self.pos + 1)
            if end < 0:
                raise self.error(f"{owner}.{name}", "cannot read the value: no closing '\"'")
            value = text[self.pos + 1 : end]
            self.pos = end + 1
            return STRING, value
        start = self.pos
        while self.pos < len(text) and not text[self.pos].isspace():
            self.pos += 1
        token = text[start : self.pos]
        try:
            return NUMBER, float(token)
        except ValueError:
            raise self.error(
                f"{owner}.{name}",
                f'cannot read the value {token!r}: expected [a,b], (a,b,...), "text" or a number',
            ) from None


_KIND_TEXT = {
    RANGE: "a range [a,b]",
    VECTOR: "a vector (a,b,...)",
    NUMBER: "a number",
    STRING: 'a string "..."',
}


def _leaf(scanner: _Scanner, name: str, line: int) -> Augmenter:
    entry = CATALOGUE[name]
    raw = scanner.parameters(name)
    params: dict[str, Any] = {}
    for key, (kind, value) in raw.items():
        if key not in entry.parameters:
            valid = ", ".join(entry.parameters) or "none"
            raise scanner.error(
                f"{name}.{key}",
                f"{name} has no parameter {key!r}; its parameters are: {valid}",
                line,
            )
        spec = entry.parameters[key]
        if kind not in spec.kinds:
            expected = " or ".join(_KIND_TEXT[k] for k in spec.kinds)
            raise scanner.error(
                f"{name}.{key}", f"{name}: {key} parameter must be {expected}", line
            )
        params[key] = value
    for key, spec in entry.parameters.items():
        if spec.required and key not in params:
            raise scanner.error(f"{name}.{key}", f"{name}: {key} is a required parameter", line)
    try:
        return entry.build(params)
    except AugmentationError as error:
        raise scanner.error(name, str(error), line) from None


def _node(scanner: _Scanner) -> Augmenter:
    name, line = scanner.name()
    if name == SEQUENTIAL:
        extra = scanner.parameters(name)
        if extra:
            raise scanner.error(name, f"takes no parameters, got {', '.join(extra)}", line)
        return Sequential(_children(scanner, name, line))
    if name == ONE_OF:
        params = scanner.parameters(name)
        kind, p = params.get("p", (None, None))
        if kind != NUMBER or set(params) != {"p"}:
            raise scanner.error(
                name,
                "The first parameter in OneOfAugmentationContainer must be the probability "
                "p (a number, e.g. p=0.5) and it takes no other",
                line,
            )
        children = _children(scanner, name, line)
        if not children:
            raise scanner.error(name, "has no augmentations before 'end'", line)
        try:
            return OneOf(children, p=p)
        except AugmentationError as error:
            raise scanner.error(name, str(error), line) from None
    if name in CATALOGUE:
        return _leaf(scanner, name, line)
    if name == END:
        raise scanner.error(END, "'end' without an open container", line)
    valid = ", ".join([*CONTAINER_NAMES, *CATALOGUE])
    reason = f"unknown augmentation {name!r}; valid names: {valid}"
    raise scanner.error(name or "text", reason, line)


def _children(scanner: _Scanner, owner: str, line: int) -> list[Augmenter]:
    children: list[Augmenter] = []
    while True:
        if scanner.at_end():
            raise scanner.error(owner, f"the container opened on line {line} has no 'end'", line)
        save = scanner.pos
        name, _ = scanner.name()
        if name == END:
            return children
        scanner.pos = save
        children.append(_node(scanner))


def parse_deephealth(
    text: str, name: str | None = None, source: str | os.PathLike[str] | None = None
) -> Augmenter:
    """Build the augmenter a DeepHealth augmentation text describes.

    Parameters
    ----------
    text
        One augmentation (``AugRotate angle=[-5,5]``) or a container with its children.
    name
        ECVL's two-argument form ``create(name, text)``: the augmentation name, with ``text``
        holding only its parameters.
    source
        The file the text came from, for error messages.

    Raises
    ------
    AugmentationConfigError
        For unknown names or parameters, wrong value kinds, missing required parameters,
        unbalanced containers or trailing text; the key names the line.
    """
    if name is not None:
        text = f"{name} {text}"
    scanner = _Scanner(text, os.fspath(source) if source is not None else None)
    if scanner.at_end():
        raise scanner.error("text", "the augmentation text is empty")
    root = _node(scanner)
    if not scanner.at_end():
        rest, line = scanner.name()
        raise scanner.error(
            rest,
            f"text after the end of the augmentation; wrap several in a {SEQUENTIAL} ... end",
            line,
        )
    return root


def load_deephealth(path: str | os.PathLike[str]) -> Augmenter:
    """:func:`parse_deephealth` on the text of a file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise AugmentationConfigError("text", f"cannot read: {error.strerror}", path) from None
    return parse_deephealth(text, source=path)


class DatasetAugmentations:
    """Augmentations per dataset split, by the split's position (DeepHealth's semantics).

    Parameters
    ----------
    augmentations
        One entry per split in the order the dataset lists its splits (usually training,
        validation, test): an :class:`Augmenter`, a DeepHealth text, or ``None`` for "no
        augmentation".
    """

    def __init__(self, augmentations: Sequence[Augmenter | str | None]) -> None:
        self.augmentations: list[Augmenter | None] = []
        for index, item in enumerate(augmentations):
            if item is None or isinstance(item, Augmenter):
                self.augmentations.append(item)
            elif isinstance(item, str):
                try:
                    self.augmentations.append(parse_deephealth(item))
                except AugmentationConfigError as error:
                    raise AugmentationConfigError(
                        f"split {index}: {error.key}", error.reason
                    ) from None
            else:
                raise AugmentationError(
                    f"split {index}: expected an Augmenter, a text or None, got {type(item)}"
                )

    def __len__(self) -> int:
        return len(self.augmentations)

    def __getitem__(self, split: int) -> Augmenter | None:
        """The augmentation of the split at position ``split`` (``None``: no augmentation)."""
        if not 0 <= split < len(self.augmentations):
            raise AugmentationError(
                f"Augmentation for split {split} does not exist: "
                f"{len(self.augmentations)} given (one per split, in the dataset's split order)"
            )
        return self.augmentations[split]

    def for_split(self, name: str, split_names: Sequence[str]) -> Augmenter | None:
        """The augmentation of the split called ``name`` among the dataset's ``split_names``."""
        names = list(split_names)
        if name not in names:
            raise AugmentationError(f"unknown split {name!r}; the dataset's splits are {names}")
        return self[names.index(name)]
