"""The data config: which images, masks and stats to train on, by purpose and category.

A data config is a YAML (``.yaml``/``.yml``) or JSON (``.json``) file in the DigitalPathology
format::

    type: distributed            # or: list (not yet split into purposes)
    distribution:                # purpose -> ratio (only for distributed; normalised)
      training: 1.0
      validation: 1.0
    path:                        # replacement strings, applied with str.format
      root: '/home/user/data'
    data:
      training:                  # purpose (only for distributed)
        breast/hne:              # category
          - image: '{root}/images/breast_hne_01.tif'     # required
            mask: '{root}/masks/breast_hne_01_mask.tif'  # optional
            stat: '{root}/stats/breast_hne_01_mask.stat' # optional
            labels: [1, 2]                               # required, mask values 0..254

Paths are formatted with the ``path`` replacements and then normalised with
:func:`os.path.normpath` (relative paths stay relative to the working directory, as in the
original library). Every error names the file and the key path of the offending entry.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from digipath.data.distribution import distribute_population
from digipath.errors import DataConfigError

__all__ = ["DataConfig", "PatchSource", "format_path", "key_path", "write_text_atomic"]

logger = logging.getLogger(__name__)

#: File extensions a data config may have (lower case).
EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}

#: Largest label value a mask may declare; 255 is the ignore value.
MAX_LABEL = 254

Replacements = Mapping[str, object]


# --------------------------------------------------------------------------------------------
# Key paths and path formatting


def key_path(*parts: str | int) -> str:
    """Join key path parts: strings with dots, integers as list indices.

    Parameters
    ----------
    *parts
        Mapping keys (str) and list indices (int).

    Returns
    -------
    str
        E.g. ``key_path("data", "training", "tumor", 3, "labels")`` is
        ``"data.training.tumor[3].labels"``.
    """
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def format_path(
    path: str, replacements: Replacements, key: str = "", source: str | None = None
) -> str:
    """Apply ``replacements`` to ``path`` with :meth:`str.format`, then normalise it.

    Parameters
    ----------
    path
        The path template, e.g. ``"{root}/images/a.tif"``; an empty string stays empty.
    replacements
        Tag -> value.
    key, source
        The key path and file named in errors.

    Returns
    -------
    str
        The formatted, :func:`os.path.normpath`-normalised path.

    Raises
    ------
    DataConfigError
        A tag that has no replacement, or a malformed template.
    """
    if not path:
        return ""
    try:
        formatted = path.format(**replacements)
    except KeyError as error:
        known = ", ".join(sorted(replacements)) or "none"
        raise DataConfigError(
            key,
            f"the path {path!r} uses the tag {{{error.args[0]}}} that has no replacement "
            f"(add it under 'path'; known tags: {known})",
            source,
        ) from None
    except (IndexError, ValueError, AttributeError) as error:
        raise DataConfigError(
            key,
            f"the path {path!r} is not a valid template ({error}); tags are written {{name}} "
            "and literal braces {{ }}",
            source,
        ) from None
    return os.path.normpath(formatted)


# --------------------------------------------------------------------------------------------
# PatchSource


@dataclass(frozen=True, order=True)
class PatchSource:
    """One image to sample patches from, with its mask, stats and declared labels.

    Immutable, hashable and orderable (sorted lists give a reproducible assignment of sources
    to worker processes).

    Parameters
    ----------
    image
        Path of the image (required, non-empty).
    mask, stat
        Paths of the label mask and of its ``.stat`` file; ``""`` when absent.
    labels
        The mask values this image is declared to contain (0..254), used to select sources
        for label ratios; not measured.
    """

    image: str
    mask: str = ""
    stat: str = ""
    labels: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image:
            raise DataConfigError("image", f"expected a non-empty path, got {self.image!r}")
        for name in ("mask", "stat"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, "")
            elif not isinstance(value, str):
                raise DataConfigError(name, f"expected a path, got {value!r}")
        labels = tuple(self.labels)
        for label in labels:
            valid = isinstance(label, int | np.integer) and not isinstance(label, bool)
            if not valid or not 0 <= int(label) <= MAX_LABEL:
                raise DataConfigError(
                    "labels", f"expected integers in 0..{MAX_LABEL}, got {label!r}"
                )
        object.__setattr__(self, "labels", tuple(int(label) for label in labels))

    def format(
        self, replacements: Replacements, key: str = "", source: str | None = None
    ) -> PatchSource:
        """Return this source with its paths formatted and normalised.

        Parameters
        ----------
        replacements
            Tag -> value, applied with :meth:`str.format`.
        key, source
            Key path of this item and the config file, named in errors.

        Returns
        -------
        PatchSource
        """
        return PatchSource(
            format_path(self.image, replacements, key_path(key, "image"), source),
            format_path(self.mask, replacements, key_path(key, "mask"), source),
            format_path(self.stat, replacements, key_path(key, "stat"), source),
            self.labels,
        )

    def to_dict(self) -> dict[str, Any]:
        """The item as written in a data config (empty mask/stat left out)."""
        item: dict[str, Any] = {"image": self.image}
        if self.mask:
            item["mask"] = self.mask
        if self.stat:
            item["stat"] = self.stat
        item["labels"] = list(self.labels)
        return item


# --------------------------------------------------------------------------------------------
# File schema (pydantic)


class _ItemModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: Annotated[StrictStr, Field(min_length=1)]
    mask: StrictStr | None = None
    stat: StrictStr | None = None
    labels: list[Annotated[StrictInt, Field(ge=0, le=MAX_LABEL)]]


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["list", "distributed"]
    distribution: dict[str, float] | None = None
    path: dict[str, StrictStr | StrictInt | float] | None = None
    data: dict[str, Any]


def _raise_validation(error: ValidationError, prefix: tuple[str | int, ...], source: str | None):
    """Turn the first pydantic error into a :class:`DataConfigError` naming its key path."""
    errors = error.errors()
    first = errors[0]
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif first["type"] == "missing":
        reason = "required key is missing"
    elif first["type"] == "literal_error" and first["loc"][-1:] == ("type",):
        reason = f"unknown type {first.get('input')!r}; expected 'list' or 'distributed'"
    else:
        reason = f"{reason} (got {first.get('input')!r})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    raise DataConfigError(key_path(*prefix, *first["loc"]), reason, source) from None


def _parse_items(
    value: Any, prefix: tuple[str | int, ...], source: str | None
) -> list[PatchSource]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataConfigError(
            key_path(*prefix), f"expected a list of items, got {type(value).__name__}", source
        )
    items = []
    for index, raw in enumerate(value):
        if not isinstance(raw, Mapping):
            raise DataConfigError(
                key_path(*prefix, index),
                f"expected an item with 'image' and 'labels', got {raw!r}",
                source,
            )
        try:
            item = _ItemModel.model_validate(raw)
        except ValidationError as error:
            _raise_validation(error, (*prefix, index), source)
        items.append(PatchSource(item.image, item.mask or "", item.stat or "", tuple(item.labels)))
    return items


def _parse_categories(
    value: Any, prefix: tuple[str | int, ...], source: str | None
) -> dict[str, list[PatchSource]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataConfigError(
            key_path(*prefix),
            f"expected a mapping of category -> items, got {type(value).__name__}",
            source,
        )
    return {
        str(category): _parse_items(items, (*prefix, str(category)), source)
        for category, items in value.items()
    }


def _check_ratios(
    ratios: Mapping[str, float], key: str, source: str | None = None
) -> dict[str, float]:
    """Check purpose ratios (finite, >= 0, not all 0) and return them normalised to sum 1."""
    if not ratios:
        raise DataConfigError(key, "expected at least one purpose with a ratio", source)
    for purpose, ratio in ratios.items():
        if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.floating):
            raise DataConfigError(
                key_path(key, purpose), f"expected a number, got {ratio!r}", source
            )
        if not math.isfinite(ratio) or ratio < 0:
            raise DataConfigError(
                key_path(key, purpose), f"expected a finite ratio >= 0, got {ratio!r}", source
            )
    total = float(sum(ratios.values()))
    if total <= 0:
        raise DataConfigError(key, "the ratios are all zero; at least one must be > 0", source)
    return {str(purpose): float(ratio) / total for purpose, ratio in ratios.items()}


# --------------------------------------------------------------------------------------------
# DataConfig


class DataConfig:
    """Image sources by purpose (training, validation, ...) and category.

    Parameters
    ----------
    data
        Without ``distribution``: category -> sources (a ``list`` config). With it: purpose ->
        category -> sources (a ``distributed`` config).
    distribution
        Purpose -> ratio (>= 0, not all zero; used normalised to sum 1, saved as given), or
        ``None`` when not yet distributed. Every purpose in ``data`` must have a ratio.
    replacements
        Tag -> value applied with :meth:`str.format` to every path.
    source
        The file the config came from, named in errors.

    Raises
    ------
    DataConfigError
        Invalid ratios, a purpose without ratio, or a path with a tag that has no replacement.

    Notes
    -----
    Sources are stored as written (unformatted); :meth:`items` formats them unless
    ``replace=False``. The constructor checks that every path formats, so a config that was
    built or loaded never fails later on a missing tag.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        distribution: Mapping[str, float] | None = None,
        replacements: Replacements | None = None,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        self._source = os.fspath(source) if source is not None else None
        self._replacements = {str(k): v for k, v in (replacements or {}).items()}
        self._distribution: dict[str, float] | None = None
        self._written_ratios: dict[str, float] = {}
        self._data: dict[str | None, dict[str, tuple[PatchSource, ...]]]
        if distribution is None:
            self._data = {None: self._categories_from(data, ("data",))}
        else:
            self._distribution = _check_ratios(distribution, "distribution", self._source)
            self._written_ratios = {str(k): float(v) for k, v in distribution.items()}
            self._data = {}
            for purpose, categories in data.items():
                if purpose not in self._distribution:
                    raise DataConfigError(
                        key_path("data", purpose),
                        f"the purpose {purpose!r} has no ratio under 'distribution' "
                        f"(purposes there: {', '.join(self._distribution)})",
                        self._source,
                    )
                self._data[purpose] = self._categories_from(categories, ("data", purpose))
        self._check_paths()

    def _categories_from(
        self, categories: Any, prefix: tuple[str, ...]
    ) -> dict[str, tuple[PatchSource, ...]]:
        if not isinstance(categories, Mapping):
            raise DataConfigError(
                key_path(*prefix), "expected a mapping of category -> sources", self._source
            )
        result = {}
        for category, items in categories.items():
            checked = []
            for index, item in enumerate(items or ()):
                if not isinstance(item, PatchSource):
                    raise DataConfigError(
                        key_path(*prefix, category, index),
                        f"expected a PatchSource, got {type(item).__name__}",
                        self._source,
                    )
                checked.append(item)
            result[str(category)] = tuple(checked)
        return result

    def _prefix(self, purpose: str | None, category: str) -> tuple[str, ...]:
        return ("data", category) if purpose is None else ("data", purpose, category)

    def _check_paths(self) -> None:
        for purpose, categories in self._data.items():
            for category, items in categories.items():
                prefix = self._prefix(purpose, category)
                for index, item in enumerate(items):
                    item.format(self._replacements, key_path(*prefix, index), self._source)

    # ----------------------------------------------------------------------------------------
    # Files

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], overrides: Replacements | None = None
    ) -> DataConfig:
        """Read a data config file.

        Parameters
        ----------
        path
            A ``.yaml``, ``.yml`` or ``.json`` file.
        overrides
            Replacements that take precedence over the file's ``path`` section (e.g. from the
            command line), applied before the paths are checked.

        Returns
        -------
        DataConfig

        Raises
        ------
        DataConfigError
            Unknown extension, unreadable file, invalid content (naming the key path), or a
            path whose tag has no replacement.
        """
        source = os.fspath(path)
        content = _read_document(source)
        try:
            model = _FileModel.model_validate(content)
        except ValidationError as error:
            _raise_validation(error, (), source)
        replacements: dict[str, object] = {k: str(v) for k, v in (model.path or {}).items()}
        replacements.update(overrides or {})
        if model.type == "list":
            if model.distribution is not None:
                logger.warning("%s: 'distribution' is ignored in a config of type 'list'", source)
            data: dict[str, Any] = _parse_categories(model.data, ("data",), source)
            return cls(data, None, replacements, source)
        if model.distribution is None:
            raise DataConfigError(
                "distribution", "a config of type 'distributed' needs purpose ratios", source
            )
        for purpose, value in model.data.items():
            if not isinstance(value, Mapping) and value is not None:
                raise DataConfigError(
                    key_path("data", purpose),
                    "expected a mapping of category -> items (type 'distributed' has "
                    "data: purpose: category: items)",
                    source,
                )
        data = {
            purpose: _parse_categories(categories, ("data", purpose), source)
            for purpose, categories in model.data.items()
        }
        return cls(data, model.distribution, replacements, source)

    def to_dict(self) -> dict[str, Any]:
        """The config as written to a file (unformatted paths, ``path`` replacements)."""
        document: dict[str, Any] = {"type": "list" if self._distribution is None else "distributed"}
        if self._distribution is not None:
            document["distribution"] = dict(self._written_ratios)
        document["path"] = {k: str(v) for k, v in self._replacements.items()}

        def categories(purpose: str | None) -> dict[str, list[dict[str, Any]]]:
            return {
                category: [item.to_dict() for item in items]
                for category, items in self._data.get(purpose, {}).items()
            }

        if self._distribution is None:
            document["data"] = categories(None)
        else:
            document["data"] = {purpose: categories(purpose) for purpose in self._data}
        return document

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config (``distributed`` if it has a distribution, else ``list``).

        The file is written under a temporary name in the target folder and renamed when
        complete. Paths are written unformatted, with the current replacements under ``path``.

        Parameters
        ----------
        path
            A ``.yaml``, ``.yml`` or ``.json`` file.

        Raises
        ------
        DataConfigError
            Unknown extension.
        """
        target = os.fspath(path)
        kind = _kind(target)
        document = self.to_dict()
        if kind == "json":
            text = json.dumps(document, indent=2) + "\n"
        else:
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)
        write_text_atomic(target, text)

    # ----------------------------------------------------------------------------------------
    # Queries

    @property
    def source(self) -> str | None:
        """The file the config was loaded from, if any."""
        return self._source

    @property
    def distribution(self) -> dict[str, float] | None:
        """Purpose -> normalised ratio, or ``None`` for a config not yet distributed."""
        return dict(self._distribution) if self._distribution is not None else None

    @property
    def replacements(self) -> dict[str, object]:
        """A copy of the path replacements (tag -> value)."""
        return dict(self._replacements)

    def update(self, replacements: Replacements) -> None:
        """Merge path replacements (overriding existing tags), in place.

        Parameters
        ----------
        replacements
            Tag -> value.
        """
        self._replacements.update({str(k): v for k, v in replacements.items()})
        self._check_paths()

    def purposes(self) -> list[str]:
        """The purposes of the distribution, in file order (empty when not distributed)."""
        return list(self._distribution) if self._distribution is not None else []

    def categories(self, purpose: str | None = None) -> list[str]:
        """The categories of one purpose, or of all purposes (first-seen order)."""
        seen: dict[str, None] = {}
        for key in self._purpose_keys(purpose):
            seen.update(dict.fromkeys(self._data.get(key, {})))
        return list(seen)

    def _purpose_keys(self, purpose: str | None) -> list[str | None]:
        if purpose is None:
            return list(self._data)
        if self._distribution is None:
            raise DataConfigError(
                key_path("data", purpose),
                "the config is not distributed into purposes; call distribute() first",
                self._source,
            )
        if purpose not in self._distribution:
            raise DataConfigError(
                key_path("data", purpose),
                f"unknown purpose; purposes are {', '.join(self._distribution)}",
                self._source,
            )
        return [purpose]

    def items(
        self, purpose: str | None = None, category: str | None = None, replace: bool = True
    ) -> list[PatchSource]:
        """The sources of one purpose and/or category (``None``: all).

        Parameters
        ----------
        purpose, category
            Restrict to this purpose / category. A category absent from a purpose gives no items.
        replace
            Format the paths with the replacements (default) or return them as written.

        Returns
        -------
        list of PatchSource
            In file order, purposes in data order.

        Raises
        ------
        DataConfigError
            A purpose that is not in the distribution.
        """
        result = []
        for key in self._purpose_keys(purpose):
            for name, items in self._data.get(key, {}).items():
                if category is not None and name != category:
                    continue
                if replace:
                    result.extend(item.format(self._replacements) for item in items)
                else:
                    result.extend(items)
        return result

    def collection(self, replace: bool = True) -> dict[str | None, dict[str, list[PatchSource]]]:
        """Purpose -> category -> sources (purpose ``None`` for an undistributed config)."""
        return {
            purpose: {
                category: [item.format(self._replacements) if replace else item for item in items]
                for category, items in categories.items()
            }
            for purpose, categories in self._data.items()
        }

    def count(self, purpose: str | None = None, category: str | None = None) -> int:
        """The number of sources of one purpose and/or category (``None``: all)."""
        return len(self.items(purpose, category, replace=False))

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        kind = "list" if self._distribution is None else f"distributed {self._distribution}"
        return f"DataConfig({kind}, {self.count()} sources, source={self._source!r})"

    # ----------------------------------------------------------------------------------------
    # Distribution

    def validate(self, purpose_ratios: Mapping[str, float]) -> None:
        """Check that a distributed config was split with ``purpose_ratios``.

        Parameters
        ----------
        purpose_ratios
            Purpose -> ratio requested (normalised before comparing).

        Raises
        ------
        DataConfigError
            The purposes differ, or a normalised ratio differs from the file's (``isclose``).
            A config that is not distributed always passes.
        """
        requested = _check_ratios(purpose_ratios, "purpose ratios")
        if self._distribution is None:
            return
        if set(requested) != set(self._distribution):
            raise DataConfigError(
                "distribution",
                f"the config is distributed over {sorted(self._distribution)}, but "
                f"{sorted(requested)} were requested",
                self._source,
            )
        for purpose, ratio in requested.items():
            if not math.isclose(ratio, self._distribution[purpose], rel_tol=1e-6, abs_tol=1e-9):
                raise DataConfigError(
                    key_path("distribution", purpose),
                    f"normalised ratio {self._distribution[purpose]:.6g} in the config, "
                    f"{ratio:.6g} requested; redistribute the data or change the ratios",
                    self._source,
                )

    def distribute(
        self,
        purpose_ratios: Mapping[str, float],
        rng: np.random.Generator | int | None = None,
    ) -> DataConfig:
        """Split every category's sources over purposes at random.

        Per category (sources of all current purposes together, in data order), the sources
        are shuffled with ``rng`` and cut into consecutive shares whose sizes come from
        :func:`~digipath.data.distribution.distribute_population`. When a category has at least
        as many sources as there are purposes with a ratio > 0, each such purpose gets at least
        one; a purpose with ratio 0 gets none.

        Parameters
        ----------
        purpose_ratios
            Purpose -> ratio (>= 0, not all zero; normalised).
        rng
            Generator or seed.

        Returns
        -------
        DataConfig
            A new, distributed config with the same replacements; ``self`` is unchanged.
        """
        ratios = _check_ratios(purpose_ratios, "purpose ratios")
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        positive = [purpose for purpose, ratio in ratios.items() if ratio > 0]
        closed = {purpose: 0 for purpose, ratio in ratios.items() if ratio == 0}
        data: dict[str, dict[str, list[PatchSource]]] = {purpose: {} for purpose in ratios}
        for category in self.categories():
            items = self.items(category=category, replace=False)
            order = generator.permutation(len(items))
            minimum = {p: 1 for p in positive} if len(items) >= len(positive) else None
            counts = distribute_population(
                len(items), ratios, generator, minimum=minimum, maximum=closed
            )
            start = 0
            for purpose, size in counts.items():
                data[purpose][category] = [items[i] for i in order[start : start + size]]
                start += size
        return DataConfig(data, dict(purpose_ratios), self._replacements, self._source)


# --------------------------------------------------------------------------------------------
# File helpers


def _kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataConfigError(
            "",
            f"unknown data config extension {suffix or '(none)'!r}; expected .yaml, .yml or .json",
            path,
        )
    return EXTENSIONS[suffix]


def _read_document(path: str) -> Any:
    kind = _kind(path)
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream) if kind == "json" else yaml.safe_load(stream)
    except FileNotFoundError:
        raise DataConfigError("", "no such file", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataConfigError("", f"cannot read the file: {error}", path) from None
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise DataConfigError("", f"not valid {kind.upper()}: {error}", path) from None
    if not isinstance(content, dict):
        raise DataConfigError(
            "", f"expected a mapping with 'type' and 'data', got {type(content).__name__}", path
        )
    return content


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
