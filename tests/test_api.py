"""The plugin contract after the split of ``api.py``: what ``probseg_bench.api`` exports, the typed registry, the
typed hook implementations, the dataset modules' uniform ``SPECS`` and the ``py.typed`` marker."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from probseg_bench import api, hookspecs
from probseg_bench.api import DatasetSpec, ModelSpec, Registry, RegularizerSpec
from probseg_bench.errors import PluginCollisionError, ProbsegError
from probseg_bench.plugins import load_plugins

from fakeplugin import TINY_SPEC

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SRC = REPO / "examples" / "probseg-example-plugin" / "src"
DATASET_MODULES = ("lidc", "qubiq", "folder", "synthetic")  # in registration order


def test_api_exports_the_whole_plugin_contract_from_one_place():
    from probseg_bench import curves, hyperparameters, registry
    from probseg_bench.data import container

    assert set(api.__all__) == {
        "CurveLogger", "LoggerSpec",
        "DatasetSpec", "HyperParameter", "HyperValue", "KnownDistribution", "LatentRegularizer",
        "LatentSegmentationModel", "ModelSpec", "MultiRaterData", "ObjectiveTerm", "ProtocolDefaults", "Registry",
        "RegularizerSpec", "TrainOutput", "resolve_hyperparameters",
    }
    # the names defined elsewhere are the same objects, whichever path a plugin imports them from
    assert api.MultiRaterData is container.MultiRaterData
    assert api.HyperParameter is hyperparameters.HyperParameter
    assert api.resolve_hyperparameters is hyperparameters.resolve_hyperparameters
    assert api.Registry is registry.Registry
    assert api.LoggerSpec is curves.LoggerSpec and api.CurveLogger is curves.CurveLogger


def test_the_contract_and_plugin_loading_do_not_import_torch():
    code = ("import sys; from probseg_bench.plugins import load_plugins; load_plugins(); "
            "print(sorted({'torch', 'nibabel', 'optuna'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_is_generic_in_its_spec_type():
    models: Registry[ModelSpec] = Registry("model", ModelSpec)
    models.set_provider("probseg-fake 1.0", "fake = fake_module")
    models.add(TINY_SPEC)
    assert models.get("tiny-fake") is TINY_SPEC
    assert models.names() == ["tiny-fake"]
    assert models.info("tiny-fake").distribution == "probseg-fake 1.0"
    dataset = DatasetSpec(name="d", description="a dataset", load=lambda data_root: None)
    with pytest.raises(ProbsegError, match="registry of models expects a ModelSpec, got DatasetSpec"):
        models.add(dataset)  # a type error too; checked at run time for untyped plugins
    with pytest.raises(PluginCollisionError, match="'tiny-fake' is registered twice"):
        models.add(TINY_SPEC)


def test_plugins_hold_one_registry_per_spec_type():
    plugins = load_plugins()
    kinds = [(plugins.models, "model", ModelSpec), (plugins.regularizers, "regularizer", RegularizerSpec),
             (plugins.datasets, "dataset", DatasetSpec)]
    for reg, kind, spec_type in kinds:
        assert (reg.kind, reg.spec_type) == (kind, spec_type)
        assert all(isinstance(reg.get(name), spec_type) for name in reg.names())


def _hook_functions(module: object) -> dict[str, object]:
    return {name: fn for name, fn in vars(module).items() if name.startswith("probseg_bench_register_")}


def test_hook_implementations_take_the_registry_of_their_kind():
    """Every built-in hook implementation, the example plugin's and the fake plugin's are annotated with the same
    ``Registry[...]`` as the hook spec they implement."""
    from fakeplugin import make_model_plugin_module

    example_spec = importlib.util.spec_from_file_location("example_plugin_under_test",
                                                          EXAMPLE_SRC / "probseg_example_plugin" / "__init__.py")
    assert example_spec is not None and example_spec.loader is not None
    example = importlib.util.module_from_spec(example_spec)  # not put into sys.modules
    example_spec.loader.exec_module(example)
    expected = {name: inspect.get_annotations(fn)["registry"] for name, fn in _hook_functions(hookspecs).items()}
    assert expected == {
        "probseg_bench_register_models": "Registry[ModelSpec]",
        "probseg_bench_register_regularizers": "Registry[RegularizerSpec]",
        "probseg_bench_register_datasets": "Registry[DatasetSpec]",
        "probseg_bench_register_loggers": "Registry[LoggerSpec]",
    }
    builtins = [importlib.import_module(m) for m in ("probseg_models", "probseg_regularizers", "probseg_datasets",
                                                      "probseg_loggers")]
    implemented = 0
    for module in [*builtins, example, make_model_plugin_module()]:
        for name, fn in _hook_functions(module).items():
            assert inspect.get_annotations(fn)["registry"] == expected[name], (module, name)
            implemented += 1
    assert implemented == 7


def test_every_dataset_module_exports_its_specs_as_SPECS():
    plugins = load_plugins()
    registered: list[str] = []
    for name in DATASET_MODULES:
        module = importlib.import_module(f"probseg_datasets.{name}")
        assert "SPECS" in module.__all__, name
        assert isinstance(module.SPECS, tuple) and module.SPECS, name
        assert all(isinstance(spec, DatasetSpec) for spec in module.SPECS), name
        for spec in module.SPECS:
            assert plugins.datasets.get(spec.name) is spec
        registered += [spec.name for spec in module.SPECS]
    # every built-in dataset comes from one of these modules, in their order
    builtin = [n for n in plugins.datasets.names() if plugins.datasets.info(n).entry_point.endswith("probseg_datasets")]
    assert sorted(registered) == builtin
    assert registered[:3] == ["lidc-sample", "lidc", "lidc-crops"]


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (REPO / "probseg_bench" / "py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["probseg_bench"]
