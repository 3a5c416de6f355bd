"""The jobs built on the shared embedding layer; each takes an Engine by injection."""
