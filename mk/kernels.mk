# Kernels: the local engine runs a real Jupyter Server for /jkg/api (engine/jupyter.lua),
# and spec/kernels_spec.lua and spec/workflow_kernel_spec.lua talk to one.
DEB_PACKAGES += python3-jupyter-server python3-ipykernel
