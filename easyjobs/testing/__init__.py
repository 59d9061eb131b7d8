"""Testing code that uses easyjobs without running a cluster by hand.

- ``easyjobs.testing.plugin``: pytest fixtures (``easyjobs_cluster``), loaded in every project
  that installs easyjobs through the ``pytest11`` entry point;
- ``easyjobs.testing.cluster``: the in-process cluster they run, for other test runners;
- ``task.run_local(...)`` (``easyjobs.workers.local``): one task's body, run with no manager.

Nothing is imported here: pytest imports this package for the plugin in every such project.
"""
