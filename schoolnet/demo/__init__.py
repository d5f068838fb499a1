"""``schoolnet demo``: a simulated city of schools, end to end, on loopback.

- :mod:`~schoolnet.demo.recordings`: the project's router recordings (moving counters)
  and the ``snmpsim-data`` recordings the schools use;
- :mod:`~schoolnet.demo.city`: the schools, written as real site-config YAML;
- :mod:`~schoolnet.demo.stack`: servers, collector and agents, started and stopped in order;
- :mod:`~schoolnet.demo.overview`: the live overview from the database and the collector;
- :mod:`~schoolnet.demo.runner`: ``run()``, the command's lifecycle; ``cli``: the click layer.
"""
