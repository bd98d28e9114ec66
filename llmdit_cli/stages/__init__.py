"""Plain functions over loaded components: the CLI, sweeps and tests all call these."""


def run_device(pipe, module):
    """Where `module` computes: its own device, or the GPU that offload hooks move it to (under
    sequential offload its parameters sit on the meta device, so `module.device` would mislead)."""
    if getattr(pipe, "_offload_device", None) is not None or getattr(module, "_hf_hook", None) is not None:
        return pipe._execution_device
    return module.device
