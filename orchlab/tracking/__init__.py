"""MLflow tracking: every call a trace with its cost, human ratings, comparisons, history, prompts.

Modules, in the order a call meets them::

    settings   the YAML ``tracking:`` section and its env overrides -> TrackingSettings
    observer   Tracking: the per-client call observer (gives responses their trace id)
    context    which MLflow run a call belongs to (compare's runs, the user's active run)
    records    CallRecord -> JSON-able trace payload (MLflow span dicts), secrets scrubbed
    writer     the background writer thread, its per-store queues and the spool
    feedback   client.feedback(): thumbs / stars as MLflow feedback with a HUMAN source
    compare    orchlab.compare(): prompts x targets, one MLflow run per target
    history    orchlab.history() / orchlab.usage_history(): traces back as DataFrames
    prompts    orchlab.register_prompt() / load_prompt(): MLflow's prompt registry
    plots      matplotlib figures of a comparison

Nothing here imports mlflow, pandas or matplotlib until it is used.
"""
