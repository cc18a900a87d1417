import pytest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # Training in the test process: one thread, as every CPU rank runs (the cores are shared;
    # torch's default of one thread per core is many times slower under contention).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
