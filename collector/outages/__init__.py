"""Outages and alert mail: entities, conditions, the engine, calendars, mail, state.

One concern per module: :mod:`entities` (the dependency tree from the inventory),
:mod:`conditions` (points to verdicts), :mod:`engine` (the pure state machine),
:mod:`dispatch` (who gets which mail when), :mod:`mailfmt` (the mails themselves),
:mod:`store` (SQLite state and the durable mail queue), :mod:`mailer` (SMTP),
:mod:`service` (wiring into the collector), :mod:`cli` (``schoolnet outages`` and
``schoolnet maintenance``). See docs/outages.md.
"""
