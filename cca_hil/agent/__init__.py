"""The agent link: wire protocol, host session, agent emulator, fault injection (DESIGN.md)."""
