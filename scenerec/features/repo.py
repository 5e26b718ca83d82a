"""Opening a Feast repo: its feature_store.yaml and its definitions, with errors that name the culprit.

Feast's own loader expands `${VAR}` with `os.path.expandvars`, which leaves an unset variable in
place (`${SCENEREC_REDIS}` then fails much later as a host name); its pydantic errors list every
union member. Here a repo opens fully checked or fails with one line naming the file and field.

Definitions are parsed with Feast's own `parse_repo` (what `feast apply` runs), from inside the repo
folder as Feast requires, and the imported definition modules are dropped from `sys.modules`
afterwards so a second repo (a copy, a test's tmp_path) is really read again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scenerec.errors import ScenerecError

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

DEFAULT_YAML = "feature_store.yaml"
# `--online-store` choices and the yaml each selects inside the repo.
ONLINE_STORE_YAMLS: dict[str, str] = {"sqlite": DEFAULT_YAML, "redis": "feature_store.redis.yaml"}
_UNEXPANDED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FeatureRepoError(ScenerecError):
    """A feature repo or its feature_store.yaml is missing, malformed or inconsistent."""

    exit_code = 2


def resolve_yaml(repo: Path, config: Path | None = None, online_store: str | None = None) -> Path:
    """The feature_store yaml to use: `config` if given, else the one `online_store` selects."""
    repo = Path(repo)
    if not repo.is_dir():
        raise FeatureRepoError(f"{repo}: feature repo not found (expected a folder with {DEFAULT_YAML})")
    if config is not None and online_store is not None:
        raise FeatureRepoError("give either a feature_store yaml (--config) or --online-store, not both")
    if config is None:
        if online_store not in (None, *ONLINE_STORE_YAMLS):
            raise FeatureRepoError(
                f"--online-store {online_store!r}: expected one of {', '.join(ONLINE_STORE_YAMLS)}"
            )
        config = repo / ONLINE_STORE_YAMLS[online_store or "sqlite"]
    if not Path(config).is_file():
        raise FeatureRepoError(f"{config}: feature store config not found")
    return Path(config)


def load_repo_config(repo: Path, yaml_path: Path, root: Path | None = None) -> RepoConfig:
    """Read, expand and validate a feature_store yaml; `root` overrides where relative paths point."""
    from feast import RepoConfig
    from feast.errors import FeastError, FeastOfflineStoreInvalidName, FeastOnlineStoreInvalidName
    from pydantic import ValidationError

    try:
        text = Path(yaml_path).read_text()
    except OSError as e:
        raise FeatureRepoError(f"{yaml_path}: cannot read ({e.strerror})") from e
    raw = _parse_yaml(text, yaml_path)
    try:
        config = RepoConfig(**raw)
        config.repo_path = Path(root or repo).resolve()
        _ = config.online_store, config.offline_store, config.registry  # validated lazily by Feast
    except ValidationError as e:
        first = e.errors()[0]
        raise FeatureRepoError(f"{yaml_path}: field '{_field(raw, first['loc'])}': {first['msg']}") from e
    except FeastOnlineStoreInvalidName as e:
        raise FeatureRepoError(f"{yaml_path}: field 'online_store.type': {e}") from e
    except FeastOfflineStoreInvalidName as e:
        raise FeatureRepoError(f"{yaml_path}: field 'offline_store.type': {e}") from e
    except (FeastError, ValueError, TypeError, ImportError) as e:
        raise FeatureRepoError(f"{yaml_path}: {e}") from e
    return config


def _field(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """The dotted yaml field of a pydantic error; store sections are validated on their own, so
    their errors lack the section name: find the section that holds the key."""
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    if not parts:
        return "(top level)"
    if parts[0] not in raw:
        for section, value in raw.items():
            if isinstance(value, dict) and parts[0] in value:
                return ".".join([section, *parts])
    return ".".join(parts)


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    expanded = os.path.expandvars(text)
    for number, line in enumerate(expanded.splitlines(), start=1):
        content = line.split("#", 1)[0]
        match = _UNEXPANDED.search(content)
        if match:
            raise FeatureRepoError(
                f"{path}:{number}: environment variable {match.group(1)} is not set "
                f"(the line reads: {line.strip()})"
            )
    try:
        raw = yaml.safe_load(expanded)
    except yaml.YAMLError as e:
        raise FeatureRepoError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise FeatureRepoError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    for field in ("project", "registry"):
        if field not in raw:
            raise FeatureRepoError(f"{path}: field '{field}' is required")
    return raw


def open_store(repo: Path, yaml_path: Path | None = None, root: Path | None = None) -> FeatureStore:
    """A FeatureStore over `repo` (or over `root`'s copy of its data), config checked first."""
    from feast import FeatureStore

    config = load_repo_config(repo, yaml_path or resolve_yaml(repo), root)
    return FeatureStore(config=config, repo_path=str(config.repo_path))


def parse_definitions(repo: Path) -> RepoContents:
    """Feast's own parse of every definition file in the repo (what `feast apply` imports)."""
    from feast.repo_operations import get_repo_files, parse_repo

    repo = Path(repo).resolve()
    files = get_repo_files(repo)
    if not files:
        raise FeatureRepoError(f"{repo}: no feature definitions (*.py) in the feature repo")
    with _inside(repo, files):
        try:
            contents = parse_repo(repo)
        except Exception as e:  # a definition file's own error, of any type: name the file, keep the cause
            raise FeatureRepoError(
                f"{_culprit(e, files, repo)}: feature definitions failed to import: {e!r}"
            ) from e
    return contents


def _culprit(error: BaseException, files: list[Path], repo: Path) -> str:
    """The repo file (and line) an import error came from, from its traceback or SyntaxError."""
    names = {str(f) for f in files}
    if isinstance(error, SyntaxError) and error.filename in names:
        return f"{error.filename}:{error.lineno}"
    where = str(repo)
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in names:
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


@contextlib.contextmanager
def _inside(repo: Path, files: list[Path]) -> Iterator[None]:
    """cwd and sys.path at the repo (Feast derives module names from cwd), restored afterwards."""
    names = [str(f.relative_to(repo).with_suffix("")).replace(os.sep, ".") for f in files]
    cwd, path, bytecode = os.getcwd(), list(sys.path), sys.dont_write_bytecode
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    sys.dont_write_bytecode = True  # no __pycache__ inside the repo
    for name in names:
        sys.modules.pop(name, None)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
        os.chdir(cwd)
        sys.path[:] = path
        sys.dont_write_bytecode = bytecode


def apply_definitions(store: FeatureStore, contents: RepoContents) -> None:
    """Register the repo's objects and delete what the repo no longer defines (`feast apply`)."""
    from feast.repo_operations import extract_objects_for_apply_delete

    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)


def check_service(contents: RepoContents, service: str, where: str) -> None:
    """Fail unless the repo defines the FeatureService a model manifest names."""
    names = sorted(s.name for s in contents.feature_services)
    if service not in names:
        raise FeatureRepoError(
            f"{where} names feature service {service!r}, which the feature repo does not define "
            f"(it defines: {', '.join(names) or 'none'})"
        )
