"""The commands on top of stack/, api/ and traffic/: bench, modelling, upgrade."""
