"""Entry points (``python -m experiments.<name>``); nothing imports this package."""
