import pytest

from nasalloc.errors import UserError
from nasalloc.workloads.base import Workload
from nasalloc.workloads.digits import DigitsWorkload
from nasalloc.workloads.registry import WORKLOADS, load_workload
from nasalloc.workloads.resnet import ResNetWorkload

HERE = "tests.workloads.failing_factories"


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch, request):
    monkeypatch.syspath_prepend(str(request.config.rootpath))


def test_built_in_names_load_with_their_options():
    assert set(WORKLOADS) == {"digits", "digits-long", "resnet"}
    assert isinstance(load_workload("digits"), DigitsWorkload)
    resnet = load_workload("resnet", steps_per_epoch=3, data_dir=None)
    assert isinstance(resnet, ResNetWorkload) and resnet.steps_per_epoch == 3 and resnet.synthetic_data
    # options a workload does not take are left out, not an error
    assert isinstance(load_workload("digits", steps_per_epoch=3, data_dir="/nowhere"), DigitsWorkload)


def test_user_factory_loads_and_trains():
    workload = load_workload("nasalloc.workloads.example:make_workload")
    assert isinstance(workload, Workload) and workload.name == "breast-cancer-mlp"
    trainer = workload.make_trainer(workload.reference_config(), seed=0)
    vals = [trainer.train_epoch().val_metric for _ in range(3)]
    assert vals[-1] > 0.85 and trainer.epoch == 3


def test_factory_receives_the_options_it_accepts():
    workload = load_workload(f"{HERE}:takes_options", steps_per_epoch=5, data_dir="/data", device="cpu")
    assert workload.received == {"data_dir": "/data", "steps_per_epoch": 5}


@pytest.mark.parametrize("spec, message", [
    ("mnist", "workload 'mnist' is unknown: expected one of digits, digits-long, resnet"),
    ("", "is empty"),
    ("no_such_package.mod:make", "cannot import module 'no_such_package.mod'"),
    (f"{HERE}:missing", f"module '{HERE}' has no attribute 'missing'"),
    (f"{HERE}:not_callable", "'not_callable' is not callable"),
    (f"{HERE}:raises", "its factory failed: RuntimeError: no GPU quota left"),
    (f"{HERE}:returns_a_string", "factory returned str, expected a nasalloc.workloads.base.Workload"),
])
def test_bad_specs_are_one_line_user_errors(spec, message):
    with pytest.raises(UserError) as err:
        load_workload(spec)
    text = str(err.value)
    assert message in text and "\n" not in text and repr(spec) in text


def test_a_spec_with_options_carries_the_profiled_batch_policy():
    """Validation hands the plan's workload to the rank processes as {"name", "options"} so a
    per_gpu profile's trials train per_gpu (and get RASDA's learning-rate rule)."""
    workload = load_workload({"name": "digits", "options": {"batch_policy": "per_gpu"}})
    assert workload.batch_policy == "per_gpu"
    assert load_workload({"name": "digits"}).batch_policy == "global"
