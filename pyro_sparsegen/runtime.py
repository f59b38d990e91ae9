"""Runtime: devices and random-number streams (imports nothing of the package)."""

import torch


def cuda_devices(*trees):
    """Indices of the CUDA devices the tensors (and modules' parameters) in ``trees`` and the
    default device use."""
    devices = {torch.get_default_device()}

    def visit(value):
        if isinstance(value, torch.Tensor):
            devices.add(value.device)
        elif isinstance(value, torch.nn.Module):
            devices.update(p.device for p in value.parameters())
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    for tree in trees:
        visit(tree)
    return sorted({torch.cuda.current_device() if d.index is None else d.index
                   for d in devices if d.type == "cuda"})


def forked_rng(*trees):
    """Run a block without consuming the global RNG (CPU and the CUDA devices in use)."""
    return torch.random.fork_rng(devices=cuda_devices(*trees))
