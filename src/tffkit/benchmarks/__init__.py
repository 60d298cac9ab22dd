"""Benchmarks behind ``tff bench NAME``: each module has ``HELP``, ``add_arguments(p)`` and ``run(args)``
and prints one JSON object with throughputs and the ratios measured in the same run."""
