"""The container image, built with podman and run for real."""
