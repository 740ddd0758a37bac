"""The architecture as data: RMI/RSI ABI tables, spec structures, GPT and syndrome codecs. No I/O."""
