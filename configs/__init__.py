"""Hydra configs (YAML) of every ``experiments`` app: a package only so that a non-editable
install ships them beside ``experiments`` (whose apps find them at ``../configs``)."""
