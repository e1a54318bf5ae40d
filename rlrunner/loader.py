"""Read a spec: safe YAML with node positions, `--set` overrides, `${env:VAR}` interpolation, validation.

Every problem is reported as `FILE:LINE:COL: dotted.path: message`, all of them at once.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rlrunner.contract.errors import InvalidSpecError
from rlrunner.envs.registry import BUNDLED_ENVIRONMENTS, MLAGENTS_REGISTRY_NAMES, known_environment
from rlrunner.hyperparameters import MANAGED, RENAMED
from rlrunner.schema import (
    ALGORITHM_CLASSES,
    BUILTIN_MODULES,
    INSTANCE_TYPE_PATTERN,
    NAME_PATTERN,
    ROLE_ARN_PATTERN,
    S3_URI_PATTERN,
    ExperimentSpec,
)

PathKey = tuple[str | int, ...]

_ENV_PATTERN = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")
_PATTERN_WORDS = {
    NAME_PATTERN: "letters, digits and single hyphens, e.g. 'basic-ppo' (no '_' or '.')",
    ROLE_ARN_PATTERN: "an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole",
    S3_URI_PATTERN: "an S3 URI such as s3://my-bucket/prefix",
    INSTANCE_TYPE_PATTERN: "a SageMaker instance type such as ml.c5.2xlarge, or local",
}


@dataclass(frozen=True)
class Location:
    """Where a value came from: a file position, or a `--set` argument."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.path}: {self.message}" if self.path else f"{self.location}: {self.message}"


class SpecError(InvalidSpecError, ValueError):
    """A spec is invalid; carries every problem found, each located (exit 3)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass
class Document:
    """Spec data before validation, with the position of every node."""

    source: str
    data: Any
    locations: dict[PathKey, Location] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def location_of(self, path: PathKey) -> Location:
        """The position of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.locations:
                return self.locations[path[:end]]
        return Location(self.source, 1, 1)


def dotted(path: Iterable[str | int]) -> str:
    """`('a', 0, 'b')` as `a[0].b`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- YAML with positions, bounded ----------------------------------------------------------------

MAX_FILE_BYTES = 256 * 1024
"""A spec file is at most 256 KiB."""
MAX_DEPTH = 32
"""Mappings and lists nest at most 32 levels deep."""
MAX_ITEMS = 1000
"""A list or mapping holds at most 1,000 entries."""
MAX_VALUES = 20_000
"""A document holds at most 20,000 values once YAML aliases are expanded."""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff\ud800-\udfff]")
# YAML 1.1 reads 1e-4 (no dot) as a string; every user means a number.
_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Limit(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses explicit tags and stops at the depth and size limits while composing."""

    depth = 0

    def _peek(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def _next(self) -> Any:
        return self.get_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self._peek()
        if not isinstance(event, yaml.AliasEvent) and getattr(event, "tag", None) not in (None, "!"):
            tag = str(event.tag).replace("tag:yaml.org,2002:", "!!", 1)
            raise _Limit(event.start_mark, f"YAML tags are not allowed (got {tag}); quote a value to make it a string")
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if self.depth >= MAX_DEPTH:
                raise _Limit(event.start_mark, f"nested more than {MAX_DEPTH} levels deep (the limit)")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor: Any) -> Any:
        start = self._peek().start_mark
        node = yaml.SequenceNode(self._next().tag or "tag:yaml.org,2002:seq", [], start, None)
        if anchor is not None:
            self.anchors[anchor] = node
        while not self.check_event(yaml.SequenceEndEvent):
            if len(node.value) >= MAX_ITEMS:
                raise _Limit(start, f"a list of more than {MAX_ITEMS:,} items (the limit)")
            node.value.append(self.compose_node(node, len(node.value)))
        node.end_mark = self._next().end_mark
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        start = self._peek().start_mark
        node = yaml.MappingNode(self._next().tag or "tag:yaml.org,2002:map", [], start, None)
        if anchor is not None:
            self.anchors[anchor] = node
        while not self.check_event(yaml.MappingEndEvent):
            if len(node.value) >= MAX_ITEMS:
                raise _Limit(start, f"a mapping of more than {MAX_ITEMS:,} keys (the limit)")
            key = self.compose_node(node, None)
            node.value.append((key, self.compose_node(node, key)))
        node.end_mark = self._next().end_mark
        return node

    def flatten_mapping(self, node: Any) -> None:
        # PyYAML's merge (`<<: [*a, *b]`), stopping as soon as the merged mapping passes the limit.
        merge: list[Any] = []
        index = 0
        while index < len(node.value):
            key_node, value_node = node.value[index]
            if key_node.tag != "tag:yaml.org,2002:merge":
                index += 1
                continue
            del node.value[index]
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    raise _Limit(source.start_mark, "a merge key (<<) takes a mapping or a list of mappings")
                self.flatten_mapping(source)
                merge.extend(source.value)
                if len(merge) + len(node.value) > MAX_ITEMS:
                    raise _Limit(node.start_mark, f"a mapping of more than {MAX_ITEMS:,} keys after merging (the limit)")
        if merge:
            node.value = merge + node.value


_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789"))


_FLOW_MARKS = re.compile(r"[\[\]{}#'\"\n]")


def _flow_too_deep(text: str) -> int | None:
    """Where flow brackets first nest deeper than MAX_DEPTH, found cheaply (PyYAML's scanner is quadratic there)."""
    depth, index = 0, 0
    while (match := _FLOW_MARKS.search(text, index)) is not None:
        char, index = match.group(), match.end()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return match.start()
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "#" and (match.start() == 0 or text[match.start() - 1] in " \t\n"):
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
        elif char in "'\"" and text[: match.start()].rstrip(" \t")[-1:] in ("", "\n", "[", "{", ",", ":", "-"):
            closing = text.find(char, index)  # a quoted scalar: brackets inside do not count
            while char == '"' and closing > 0 and text[closing - 1] == "\\":
                closing = text.find(char, closing + 1)
            index = len(text) if closing < 0 else closing + 1
    return None


def _position(text: str, index: int) -> tuple[int, int]:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def compose_yaml(text: str, source: str, line: int = 1, column: int = 1) -> yaml.Node | None:
    """Parse YAML text into a node graph within the limits; every problem is a located SpecError.

    `line`/`column`: where `text` starts in `source` (a `--set` value starts after `key=`).
    """

    def located(at_line: int, at_column: int, message: str) -> SpecError:
        where = Location(source, line + at_line - 1, (column + at_column - 1) if at_line == 1 else at_column)
        return SpecError([Problem(where, "", message)])

    control = _CONTROL.search(text)
    if control:
        raise located(*_position(text, control.start()), f"control character {ord(control.group()):#04x} is not allowed in a spec")
    deep = _flow_too_deep(text)
    if deep is not None:
        raise located(*_position(text, deep), f"nested more than {MAX_DEPTH} levels deep (the limit)")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    except _Limit as error:
        raise located(error.mark.line + 1, error.mark.column + 1, error.message) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise located(*at, f"YAML syntax error: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise located(1, 1, f"YAML error: {error}") from None
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str) -> Document:
    """Parse YAML safely, keeping each node's line and column; duplicate keys are errors."""
    node = compose_yaml(text, source)
    document = Document(source, None)
    if node is None:
        raise SpecError(
            [
                Problem(
                    Location(source, 1, 1),
                    "",
                    "the file is empty; expected a mapping with name, environment, algorithm and training",
                )
            ]
        )
    problems: list[Problem] = []
    try:
        document.data = _construct(node, (), document, _Builder(), problems)
    except _Limit as error:
        raise SpecError([Problem(Location(source, error.mark.line + 1, error.mark.column + 1), "", error.message)]) from None
    if problems:
        raise SpecError(problems)
    return document


class _Builder:
    """Constructs values from nodes, counting them: aliases may not expand a document past MAX_VALUES."""

    def __init__(self) -> None:
        self.constructor = _BoundedLoader("")
        self.count = 0

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as error:
            raise _Limit(node.start_mark, f"cannot read the value {node.value!r}: {getattr(error, 'problem', None) or error}") from None


def _construct(node: yaml.Node, path: PathKey, document: Document, builder: _Builder, problems: list[Problem]) -> Any:
    where = Location(document.source, node.start_mark.line + 1, node.start_mark.column + 1)
    builder.count += 1
    if builder.count > MAX_VALUES:
        raise _Limit(node.start_mark, f"the document expands to more than {MAX_VALUES:,} values (the limit; YAML aliases?)")
    document.locations[path] = where
    if isinstance(node, yaml.MappingNode):
        builder.constructor.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                at = Location(document.source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                problems.append(Problem(at, dotted(path), "a key must be a plain value, not a list or mapping"))
                continue
            key = builder.scalar(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                at = Location(document.source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                problems.append(Problem(at, dotted((*path, key)), "duplicate key"))
                continue
            result[key] = _construct(value_node, (*path, key), document, builder, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), document, builder, problems) for index, item in enumerate(node.value)]
    return builder.scalar(node)


def parse_value(text: str, location: Location) -> Any:
    """One YAML value (a `--set` value, a `${env:}` value) within the same limits as a file; no positions."""
    node = compose_yaml(text, location.source, location.line, location.column)
    if node is None:
        return None
    scratch = Document(location.source, None)
    problems: list[Problem] = []
    try:
        value = _construct(node, (), scratch, _Builder(), problems)
    except _Limit as error:
        raise SpecError([Problem(location, "", error.message)]) from None
    if problems:
        raise SpecError([Problem(location, "", p.message) for p in problems])
    return value


# --- ${env:VAR} and --set ----------------------------------------------------------------------------


def interpolate_env(document: Document, environ: Mapping[str, str]) -> list[Problem]:
    """Replace `${env:VAR}` / `${env:VAR,default}` in string values; a whole-value reference keeps YAML typing."""
    problems: list[Problem] = []

    def visit(value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {key: visit(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [visit(item, (*path, index)) for index, item in enumerate(value)]
        if not isinstance(value, str) or "${env:" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(
                Problem(
                    document.location_of(path),
                    dotted(path),
                    f"environment variable {name} is not set (write ${{env:{name},default}} to give a default)",
                )
            )
            return ""

        whole = _ENV_PATTERN.fullmatch(value)
        replaced = _ENV_PATTERN.sub(substitute, value)
        return _yaml_scalar(replaced) if whole else replaced

    document.data = visit(document.data, ())
    return problems


def _yaml_scalar(text: str) -> Any:
    try:
        return parse_value(text, Location("${env:}", 1, 1)) if text.strip() else None
    except SpecError:
        return text


def apply_overrides(document: Document, overrides: Sequence[str]) -> list[Problem]:
    """Apply `dotted.path=value` overrides; values are YAML scalars, lists or flow mappings, never evaluated."""
    problems: list[Problem] = []
    for override in overrides:
        source = f"--set {override}"
        key, sep, raw = override.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            problems.append(
                Problem(
                    Location(source, 1, 1),
                    "",
                    "expected --set dotted.path=value, e.g. --set algorithm.hyperparameters.lr=0.0003",
                )
            )
            continue
        where = Location(source, 1, len(key) + 2)
        if len(override) > MAX_FILE_BYTES or key.count(".") >= MAX_DEPTH:
            too = f"longer than {MAX_FILE_BYTES:,} characters" if len(override) > MAX_FILE_BYTES else f"deeper than {MAX_DEPTH} levels"
            problems.append(Problem(Location(source[:80] + ("…" if len(source) > 80 else ""), 1, 1), "", f"the override is {too} (the limit)"))
            continue
        try:
            value = parse_value(raw, where) if raw.strip() else None
        except SpecError as error:
            message = error.problems[0].message.removeprefix("YAML syntax error: ")
            problems.append(Problem(where, key, f"value is not valid YAML: {message}"))
            continue
        path: PathKey = tuple(int(part) if part.isdigit() else part for part in key.split("."))
        problem = set_path(document, path, value, where)
        if problem:
            problems.append(problem)
    return problems


def set_path(document: Document, path: PathKey, value: Any, location: Location) -> Problem | None:
    """Set one dotted path in the document's data, creating mappings on the way."""
    if not isinstance(document.data, dict):
        return Problem(location, dotted(path), "the spec is not a mapping")
    target: Any = document.data
    for index, part in enumerate(path[:-1]):
        child = (
            target.get(part)
            if isinstance(target, dict)
            else (target[part] if isinstance(target, list) and isinstance(part, int) and part < len(target) else None)
        )
        if child is None:
            child = {}
            if isinstance(target, dict):
                target[part] = child
                document.locations[path[: index + 1]] = location  # a mapping the override made: its errors are the override's
            else:
                return Problem(location, dotted(path[: index + 1]), "no such element to set")
        if not isinstance(child, dict | list):
            return Problem(location, dotted(path[: index + 1]), f"is a {type(child).__name__}, not a mapping")
        target = child
    last = path[-1]
    if isinstance(target, list):
        if not isinstance(last, int) or last >= len(target):
            return Problem(location, dotted(path), "list index out of range")
        target[last] = value
    else:
        target[last] = value
    for known in [key for key in document.locations if key[: len(path)] == path]:
        del document.locations[known]
    document.locations[path] = location
    return None


# --- validation ----------------------------------------------------------------------------------------


def validate_document(document: Document) -> ExperimentSpec:
    """Validate a document as an ExperimentSpec; raise SpecError with every located problem."""
    if not isinstance(document.data, dict):
        got = type(document.data).__name__
        raise SpecError(
            [
                Problem(
                    document.location_of(()),
                    "",
                    f"expected a mapping with name, environment, algorithm and training (got {got})",
                )
            ]
        )
    try:
        spec = ExperimentSpec.model_validate(document.data)
    except ValidationError as error:
        raise SpecError(problems_from_validation(error, document)) from None
    problems = check_files(spec, document)
    if problems:
        raise SpecError(problems)
    return spec


MAX_SOURCE_DIR_BYTES = 100 * 1024 * 1024
"""source_dir (copied and uploaded with every job) holds at most 100 MiB."""
MAX_BUILD_FOLDER_BYTES = 4 * 1024 * 1024 * 1024
"""The folder of a local environment.binary (uploaded as the `train` channel) holds at most 4 GiB."""
MAX_FOLDER_FILES = 100_000
"""Either folder holds at most 100,000 files."""


def folder_problem(folder: Path, spec_dir: Path, what: str, limit: int) -> str | None:
    """Why `folder` must not be copied or uploaded: too broad (/, home, above the spec's folder) or too large."""
    folder, spec_dir, home = folder.resolve(), spec_dir.resolve(), Path.home().resolve()
    if folder == Path(folder.anchor) or folder == home:
        return f"{what} {folder} is {'the root folder' if folder == Path(folder.anchor) else 'the home folder'}: far too much to upload"
    if folder in spec_dir.parents:
        return f"{what} {folder} is a folder above the spec's own ({spec_dir}): keep it in a folder of its own"
    size = files = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in names:
            files += 1
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(root, name)).st_size
            if size > limit or files > MAX_FOLDER_FILES:
                over = f"more than {limit:,} bytes" if size > limit else f"more than {MAX_FOLDER_FILES:,} files"
                return f"{what} {folder} holds {over} (the limit); nothing was copied or uploaded"
    return None


def check_files(spec: ExperimentSpec, document: Document) -> list[Problem]:
    """Check the files a spec names: they exist, are what they should be, and are safe to copy and upload."""
    problems: list[Problem] = []
    if spec.source_dir is not None:
        folder = document.base_dir / spec.source_dir
        if not folder.is_dir():
            problems.append(
                Problem(document.location_of(("source_dir",)), "source_dir", f"folder {folder} does not exist")
            )
        elif problem := folder_problem(folder, document.base_dir, "folder", MAX_SOURCE_DIR_BYTES):
            problems.append(Problem(document.location_of(("source_dir",)), "source_dir", problem))
        elif spec.algorithm.model.module and spec.algorithm.model.module not in BUILTIN_MODULES:
            filename = spec.algorithm.model.module.split(":")[0].replace(".", "/") + ".py"
            if not (folder / filename).is_file():
                path = ("algorithm", "model", "module")
                problems.append(
                    Problem(document.location_of(path), dotted(path), f"file {folder / filename} does not exist")
                )
    name = spec.environment.name
    if name is not None and not known_environment(name):
        known = sorted(set(BUNDLED_ENVIRONMENTS) | MLAGENTS_REGISTRY_NAMES)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        field = ("environment", "name")
        problems.append(
            Problem(document.location_of(field), dotted(field), f"{name!r} is neither bundled nor in ML-Agents' registry{hint}; "
                    "for your own build give environment.binary")
        )  # fmt: skip
    binary = spec.environment.binary
    if binary is not None and not spec.environment.binary_on_s3:
        resolved = document.base_dir / binary
        field = ("environment", "binary")
        if not resolved.exists():
            problems.append(Problem(document.location_of(field), dotted(field), f"file {resolved} does not exist"))
        elif not resolved.is_file():
            problems.append(Problem(document.location_of(field), dotted(field), f"{resolved} is a folder, not the player executable"))
        elif problem := folder_problem(resolved.parent, document.base_dir, "the build's folder", MAX_BUILD_FOLDER_BYTES):
            problems.append(Problem(document.location_of(field), dotted(field), problem))
    return problems


def problems_from_validation(error: ValidationError, document: Document) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per field."""
    by_path: dict[PathKey, list[Any]] = {}
    for item in error.errors():
        path = _data_path(item["loc"], document.data)
        if item["type"] == "union_tag_invalid":
            path = (*path, "name")
        by_path.setdefault(path, []).append(item)
    problems = []
    for path, items in by_path.items():
        message = _union_message(items) if len(items) > 1 else _message(items[0], path, document.data)
        named = re.match(r"^([a-z_]+(?:\.[A-Za-z0-9_\-]+)+): (.*)$", message, re.DOTALL)
        if named and items[0]["type"] == "value_error":
            path = tuple(named.group(1).split("."))
            message = named.group(2)
        problems.append(Problem(document.location_of(path), dotted(path), message))
    return problems


_TYPE_WORDS = {
    "int": "an integer",
    "finite": "a finite number",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "tuple": "a list",
}


def _union_message(items: list[Any]) -> str:
    """One message for a value that matched none of a union's members."""
    constraint = next((item for item in items if item["type"].startswith(("greater", "less"))), None)
    if constraint is not None:
        return _message(constraint, (), None)
    words = []
    for item in items:
        kind = item["type"]
        word = (
            repr(item["ctx"]["expected"]).strip('"')
            if kind == "literal_error"
            else _TYPE_WORDS.get(kind.split("_")[0], kind)
        )
        if word not in words:
            words.append(word)
    return f"must be {' or '.join(words)} (got {items[0].get('input')!r})"


def _data_path(loc: tuple[int | str, ...], data: Any) -> PathKey:
    """Keep the parts of pydantic's loc that name input data (drop union-member tags)."""
    path: list[str | int] = []
    current = data
    for part in loc:
        present = (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and part < len(current)
        )
        if present:
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and not _looks_like_tag(part):
            path.append(part)  # a missing field
            current = None
    return tuple(path)


def _looks_like_tag(part: str) -> bool:
    return part in ALGORITHM_CLASSES or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part)


def _message(item: Any, path: PathKey, data: Any) -> str:
    kind, ctx, value = item["type"], item.get("ctx", {}), item.get("input")
    got = (
        f" (got {value!r})"
        if not isinstance(value, dict | list)
        else f" (got a {'mapping' if isinstance(value, dict) else 'list'})"
    )
    if kind == "extra_forbidden":
        return _unknown_key(path, data)
    if kind == "missing":
        return "required"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {sign} {bound}{got}"
    if kind == "string_pattern_mismatch":
        return f"must be {_PATTERN_WORDS.get(ctx.get('pattern', ''), 'matching ' + str(ctx.get('pattern')))}{got}"
    if kind == "string_too_long":
        return f"at most {ctx['max_length']} characters (got {len(value)})"
    if kind == "union_tag_invalid":
        expected = sorted(ALGORITHM_CLASSES)
        close = difflib.get_close_matches(str(ctx.get("tag")), expected, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown algorithm {ctx.get('tag')!r}: expected one of {', '.join(expected)}{hint}"
    if kind == "union_tag_not_found":
        return f"needs a name: one of {', '.join(sorted(ALGORITHM_CLASSES))}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping{got}"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    message = str(item["msg"]).replace("Input should be", "must be")
    return f"{message}{got}"


def _unknown_key(path: PathKey, data: Any) -> str:
    key = str(path[-1])
    if len(path) >= 2 and path[-2] == "hyperparameters":
        if key in RENAMED:
            new = RENAMED[key]
            where = f"set {new}" if "." in new else f"use {new!r}"
            return f"{key!r} is an old-API-stack RLlib name; on the new API stack {where}"
        if key in MANAGED:
            return f"{key!r} is set by rlrunner from {MANAGED[key]}"
    allowed = _allowed_keys(path[:-1], data)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6) if allowed else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint}"


def _allowed_keys(path: PathKey, data: Any) -> list[str]:
    """The keys the model at `path` accepts (for suggestions)."""
    model: Any = ExperimentSpec
    current = data
    for part in path:
        current = current.get(part) if isinstance(current, dict) else None
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        info = next((f for name, f in fields.items() if (f.alias or name) == part), None)
        if info is None:
            return []
        model = _model_of(info.annotation, current)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]
    return []


def _model_of(annotation: Any, data: Any) -> Any:
    if (
        isinstance(data, dict)
        and data.get("name") in ALGORITHM_CLASSES
        and any(arg in ALGORITHM_CLASSES.values() for arg in typing.get_args(annotation))
    ):
        return ALGORITHM_CLASSES[data["name"]]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0], data)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg, data)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


# --- the edge: read a file ------------------------------------------------------------------------


def load_document(
    path: str | Path, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> Document:
    """Read a spec file, interpolate `${env:…}` and apply overrides (not yet validated)."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise SpecError([Problem(Location(source, 1, 1), "", f"cannot read the file: {error.strerror or error}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError([Problem(Location(source, 1, 1), "", f"the file is larger than {MAX_FILE_BYTES:,} bytes (the limit)")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _position(raw.decode("utf-8", "replace"), len(raw[: error.start].decode("utf-8", "replace")))
        raise SpecError([Problem(Location(source, line, column), "", f"not UTF-8 text (byte {raw[error.start]:#04x})")]) from None
    document = parse_yaml(text, source)
    document.base_dir = path.parent
    problems = interpolate_env(document, os.environ if environ is None else environ)
    problems += apply_overrides(document, overrides)
    if problems:
        raise SpecError(problems)
    return document


def load_spec(
    path: str | Path, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> tuple[ExperimentSpec, Document]:
    """Read and validate a spec file."""
    document = load_document(path, overrides, environ)
    return validate_document(document), document
