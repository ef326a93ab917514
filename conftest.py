pytest_plugins = ["devtools.pytest_plugin"]
