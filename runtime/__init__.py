"""mixc runtime: executor, links and the numeric kernels (installed as ``mixc.runtime``)."""
