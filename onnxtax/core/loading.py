"""Resolve a model spec (`path/to/file.py:NAME`, `package.module:NAME`, or a Hugging Face folder as
`hf:DIR[#task]` / `st:DIR`, onnxtax.core.hub) to an eval-mode nn.Module."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from onnxtax.core.errors import InputSpecError, LoadError
from onnxtax.core.frames import frames_of, user_frame
from onnxtax.core.specs import InputSpec

SPEC_HELP = "write the model as path/to/file.py:NAME, package.module:NAME, hf:DIR[#task] or st:DIR"


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module
    spec: str
    class_name: str
    source_file: str | None
    in_memory: bool = False  # given as an nn.Module object: no spec a fresh process could load
    hub: Any = None  # hf:/st: specs: what was derived (onnxtax.core.hub.build.HubModel)

    def to_dict(self) -> dict:
        return {"spec": self.spec, "class_name": self.class_name, "source_file": self.source_file}


def split_spec(spec: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    # a Windows drive letter (C:\x.py) has no NAME after it
    if not sep or not target or not name or ("/" in name or "\\" in name):
        raise LoadError(f"model spec '{spec}' has no ':NAME'", SPEC_HELP)
    return target, name


def _user_frame(exc: BaseException, path: Path | None) -> str:
    """The user's frame of the error, as 'file:line: code' (the deepest frame if none is theirs)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: {(exc.text or '').strip()}"
    frames = frames_of(exc)
    chosen = user_frame(frames, str(path) if path else None) or (frames[-1] if frames else None)
    return f"{chosen.location}: {chosen.code}" if chosen else "?"


def _import_target(target: str) -> tuple[Any, Path | None]:
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    if looks_like_file:
        path = Path(target).expanduser().resolve()
        if path.is_dir():
            raise LoadError(f"model file '{target}' is a folder, not a Python file", SPEC_HELP)
        if not path.is_file():
            raise LoadError(f"model file '{target}' does not exist", SPEC_HELP)
        # a name that is the same in every process (str hashes are salted per process): it
        # ends up in the exported graph's metadata, and identical exports must be identical bytes
        digest = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:16]
        mod_name = "_onnxtax_user_" + re.sub(r"\W", "_", path.stem) + "_" + digest
        if mod_name in sys.modules:
            return sys.modules[mod_name], path
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:  # not a .py (or other importable) file
            raise LoadError(f"model file '{target}' is not a Python file Python can import", SPEC_HELP)
        module = importlib.util.module_from_spec(spec)
        # the user's file may import siblings next to it
        sys.path.insert(0, str(path.parent))
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - any error in user code is a load error
            sys.modules.pop(mod_name, None)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, ImportError) and "no known parent package" in str(exc):
                packaged = _import_in_package(path)
                if packaged is not None:
                    return packaged, path
            raise LoadError(
                f"importing '{target}' failed: {type(exc).__name__}: {exc} at {_user_frame(exc, path)}",
                "fix the error in your model file; --debug shows the full traceback",
            ) from exc
        finally:
            try:
                sys.path.remove(str(path.parent))
            except ValueError:
                pass
        return module, path
    try:
        with _on_sys_path(Path.cwd()):  # as `python -m` does: packages in the current folder
            module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if Path(target).exists():  # `notes.txt:MLP`, `folder.onnx:MLP`: a path, not a module
            what = "a folder" if Path(target).is_dir() else "not a Python file"
            raise LoadError(f"model file '{target}' is {what}", SPEC_HELP) from exc
        if exc.name and target.startswith(exc.name):
            raise LoadError(f"module '{target}' not found", f"{SPEC_HELP}; is the package installed?") from exc
        raise LoadError(
            f"importing '{target}' failed: {type(exc).__name__}: {exc} at {_user_frame(exc, None)}",
            "fix the import in your module; --debug shows the full traceback",
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise LoadError(
            f"importing '{target}' failed: {type(exc).__name__}: {exc} at {_user_frame(exc, None)}",
            "fix the error in your module; --debug shows the full traceback",
        ) from exc
    file = getattr(module, "__file__", None)
    return module, Path(file).resolve() if file else None


@contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path while importing, unless it is there already."""
    entry = str(folder)
    present = entry in sys.path or (folder == Path.cwd() and "" in sys.path)
    if not present:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if not present:
            try:
                sys.path.remove(entry)
            except ValueError:
                pass


def _import_in_package(path: Path) -> Any | None:
    """A file inside a package (folders with __init__.py) that uses relative imports
    (`from .layers import Block`): import it by its dotted name, as its package does.
    None when the file is not in a package or another module owns that name."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder != folder.parent:
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return None
    dotted = ".".join(parts)
    try:
        with _on_sys_path(folder):
            module = importlib.import_module(dotted)
    except BaseException as exc:  # noqa: BLE001 - any error in user code is a load error
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise LoadError(
            f"importing '{path}' as {dotted} failed: {type(exc).__name__}: {exc} at {_user_frame(exc, path)}",
            "fix the error in your model file; --debug shows the full traceback",
        ) from exc
    file = getattr(module, "__file__", None)
    if not file or Path(file).resolve() != path:
        return None  # an installed package of the same name shadows it
    return module


def load_model(spec: str) -> LoadedModel:
    """Import the spec and build the module: an instance, a class with a no-argument
    constructor, or a zero-argument factory. Always returned in eval mode."""
    if spec.startswith(("hf:", "st:")):
        from onnxtax.core.hub.build import build_hub_module, derive_hub

        hub = derive_hub(spec)  # offline, float32, eval mode
        module = build_hub_module(hub)
        return LoadedModel(module, spec, type(module).__name__, hub.source_file, hub=hub)
    import torch

    target, name = split_spec(spec)
    module, path = _import_target(target)
    if not hasattr(module, name):
        public = [n for n in vars(module) if not n.startswith("_")]
        candidates = [n for n in public if _gives_module(getattr(module, n), torch)]
        hint = f"nn.Modules there: {', '.join(candidates)}" if candidates else "define it, or point at another file"
        raise LoadError(f"'{target}' has no attribute '{name}'", hint)
    obj = getattr(module, name)
    model = _instantiate(obj, name, target, torch, path)
    model.eval()
    return LoadedModel(model, spec, type(model).__name__, str(path) if path else None)


def defining_file(cls) -> str | None:
    """The file defining a model class (also for modules loaded without sys.modules)."""
    try:
        file = inspect.getsourcefile(cls)
    except TypeError:
        file = None
    forward = getattr(cls, "forward", None)
    if file is None and hasattr(forward, "__code__"):
        file = forward.__code__.co_filename
    return file


def resolve_model(model: Any) -> LoadedModel:
    """What every stage accepts as a model: a spec string (loaded, in eval mode), a
    LoadedModel, or an nn.Module object (used as it is; the caller sets its mode)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise LoadError(f"model is a {type(model).__name__}, not an nn.Module or a spec string",
                        "pass an nn.Module or 'path/to/file.py:NAME'")
    name = type(model).__name__
    return LoadedModel(model, f"<{name} instance>", name, defining_file(type(model)), in_memory=True)


def _gives_module(obj: Any, torch) -> bool:
    return isinstance(obj, torch.nn.Module) or (inspect.isclass(obj) and issubclass(obj, torch.nn.Module))


def _instantiate(obj: Any, name: str, target: str, torch, path: Path | None):
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise LoadError(
            f"'{target}:{name}' is a {type(obj).__name__}, not an nn.Module",
            "point at an nn.Module instance, an nn.Module class, or a function returning one",
        )
    if inspect.isclass(obj) and not issubclass(obj, torch.nn.Module):
        raise LoadError(f"'{target}:{name}' is the class {obj.__name__}, not an nn.Module subclass",
                        "point at an nn.Module class, instance, or factory")
    try:
        sig = inspect.signature(obj)
        required = [p for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        required = []
    if required:
        raise LoadError(
            f"'{target}:{name}' needs arguments ({', '.join(p.name for p in required)})",
            "give defaults to every constructor argument, or add a zero-argument factory function returning the model",
        )
    try:
        result = obj()
    except Exception as exc:  # noqa: BLE001
        raise LoadError(
            f"building '{target}:{name}' failed: {type(exc).__name__}: {exc} at {_user_frame(exc, path)}",
            "fix the error in your model code; --debug shows the full traceback",
        ) from exc
    if not isinstance(result, torch.nn.Module):
        raise LoadError(f"'{target}:{name}()' returned a {type(result).__name__}, not an nn.Module",
                        "make the factory return the model")
    return result


def forward_parameters(model) -> list[str]:
    """Names of forward()'s positional arguments (the ones --input fills, in order)."""
    sig = inspect.signature(model.forward)
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def required_forward_parameters(model) -> list[str]:
    sig = inspect.signature(model.forward)
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


def keyword_only_parameters(model) -> list[str]:
    """forward()'s keyword-only arguments (`forward(self, x, *, scale)`): declared with --input by name."""
    sig = inspect.signature(model.forward)
    return [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]


def check_inputs_match(model, specs: list[InputSpec], spec: str):
    """The --input list must fit forward(): every required argument, no more than it takes.
    An --input named like a keyword-only argument is passed by that name. Returns the module
    to call with the inputs in --input order: the model itself, or (with keyword-only
    inputs) the model behind a thin module that passes those by name."""
    params = forward_parameters(model)
    required = required_forward_parameters(model)
    sig_params = inspect.signature(model.forward).parameters.values()
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in sig_params)
    keyword_only = keyword_only_parameters(model)
    required_keywords = [p.name for p in sig_params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    given = [s.name for s in specs]
    positional = [s.name for s in specs if s.name not in keyword_only]
    takes = ", ".join(params + [f"*, {k}" if i == 0 else k for i, k in enumerate(keyword_only)])
    if not specs:
        raise InputSpecError(
            f"no --input given; {spec} forward() takes ({takes})",
            "add one --input NAME:DIMS[:DTYPE] per forward() argument, e.g. --input "
            + (f"{params[0]}:batch,16" if params else "x:batch,16"),
        )
    if len(positional) < len(required) or (len(positional) > len(params) and not var_positional):
        raise InputSpecError(
            f"{len(specs)} --input given ({', '.join(given)}) but forward() takes "
            f"{len(params)} ({takes})"
            + (f", {len(required)} required" if len(required) != len(params) else ""),
            "give one --input per forward() argument, in order" + (
                f"; keyword-only arguments by their name ({', '.join(keyword_only)})" if keyword_only else ""),
        )
    missing = [k for k in required_keywords if k not in given]
    if missing:
        raise InputSpecError(f"forward() needs the keyword-only argument{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}, and no --input is named so",
                             f"add --input {missing[0]}:DIMS[:DTYPE] (keyword-only arguments are declared by name)")
    by_name = {i: s.name for i, s in enumerate(specs) if s.name in keyword_only}
    return _pass_by_name(model, by_name) if by_name else model


def _pass_by_name(model, by_name: dict[int, str]):
    """A module taking every input positionally (what torch.export, torch.onnx and the
    stages' callers give) that calls `model` with the inputs at `by_name` as keywords.
    Its class carries the model's class name, which reports show."""
    import torch

    def forward(self, *args):
        positional = [a for i, a in enumerate(args) if i not in by_name]
        return self.inner(*positional, **{name: args[i] for i, name in by_name.items()})

    cls = type(type(model).__name__, (torch.nn.Module,), {"forward": forward, "__module__": __name__,
                                                          "passes_by_name": True})
    wrapper = cls()
    wrapper.inner = model
    wrapper.train(model.training)
    return wrapper
