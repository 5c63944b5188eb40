"""Differential privacy mechanisms (SPEC §3); not implemented yet (issue 4)."""


def laplace(x, sensitivity, epsilon):
    raise NotImplementedError("mixc.dp.laplace is not implemented yet (planned with the HE device)")


def gaussian(x, sensitivity, epsilon, delta):
    raise NotImplementedError("mixc.dp.gaussian is not implemented yet (planned with the HE device)")
