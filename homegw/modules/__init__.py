"""homegw IO modules: one package per module (datapath, control plane, config)."""
