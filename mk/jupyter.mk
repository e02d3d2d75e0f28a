# Kernels: the local engine runs a real Jupyter Server for /jkg/api
# (engine/jupyter.lua); the kernel specs talk to one. `make test-kernels`
# (part of `make test`) installs it and runs them.
DEB_PACKAGES_JUPYTER ?= python3-jupyter-server python3-ipykernel
# Every spec that starts a real Jupyter Server belongs here, so it runs once
# Jupyter is installed (a fresh machine has it only after deps-jupyter).
KERNEL_SPECS = spec/kernels_spec.lua spec/workflow_kernel_spec.lua spec/jupyter_gateway_spec.lua \
               spec/engine_children_spec.lua spec/engine_security_spec.lua
$(eval $(call capability,jupyter,$$(DEB_PACKAGES_JUPYTER),test-kernels,$$(KERNEL_SPECS)))
