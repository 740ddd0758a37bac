"""Targets: one class per kind of target, all behind :class:`cca_hil.targets.base.Target`."""
