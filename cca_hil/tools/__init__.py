"""Stand-ins for hardware and external programs, used by the tests and available to users."""
