"""Root conftest: loads the harness' pytest plugin (suite cells as test items, summary table)."""

pytest_plugins = ["harness.pytest_plugin"]
