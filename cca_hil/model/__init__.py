"""The virtual RME platform: memory, granule protection, EL3 monitor, RMM. No I/O."""
