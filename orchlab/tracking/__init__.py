"""MLflow tracking: every call a trace with its cost, human ratings, comparisons, history, prompts.

Modules, in the order a call meets them::

    settings   the YAML ``tracking:`` section and its env overrides -> TrackingSettings
    observer   Tracking: the per-client call observer (gives responses their trace id)
    context    which MLflow run a call belongs to (compare's runs, the user's active run)
    records    CallRecord -> JSON-able trace record, secrets scrubbed
    journal    the record on disk before the call returns (append-only files per process)
    launch     the caller's side of the drain: start one, wait for it (flush), hear from it
    drain      the drain process: writes a store's journals into MLflow, then exits when idle
    mlflow_writes   records -> MLflow, with its public API only (in the drain)
    store      opening a store: first-time setup never half done, errors for a broken one
    api        flush(), tracking_status(), which store a reading function reads
    feedback   client.feedback(): thumbs / stars as MLflow feedback with a HUMAN source
    compare    orchlab.compare(): prompts x targets, one MLflow run per target
    history    orchlab.history() / orchlab.usage_history(): traces back as DataFrames
    prompts    orchlab.register_prompt() / load_prompt(): MLflow's prompt registry
    plots      matplotlib figures of a comparison

Nothing here imports mlflow, pandas or matplotlib until it is used; a calling process imports
mlflow only to read (history, compare, prompts), never to write a trace.
"""
