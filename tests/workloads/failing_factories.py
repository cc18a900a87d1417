"""Factories that go wrong in the ways a user's might (loaded by test_registry via module:factory)."""


def raises():
    raise RuntimeError("no GPU quota left\nsecond line that must not reach the message")


def returns_a_string():
    return "not a workload"


def takes_options(data_dir=None, steps_per_epoch=None):
    from nasalloc.workloads.digits import DigitsWorkload

    workload = DigitsWorkload()
    workload.received = {"data_dir": data_dir, "steps_per_epoch": steps_per_epoch}
    return workload


not_callable = 42
