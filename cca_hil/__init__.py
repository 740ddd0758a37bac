"""cca-hil: hardware-in-the-loop testing for Arm CCA (RME) targets."""

__version__ = "0.1.0"
