"""The demo: a simulated jobmon server, replica processes, the live view and the verdict."""
