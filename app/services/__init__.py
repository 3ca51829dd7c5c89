"""Qt-free use cases over the catalog and the model (long jobs take ``progress``/``should_stop``).

- :mod:`app.services.review`: Session (an open catalog and its model: match tasks with their
  candidate cards, heatmaps, pair evidence), ReviewQueue (which photo the match review shows next).
- :mod:`app.services.snapshot`, :mod:`app.services.viewdata`: what the views show, read in one go
  (Snapshot, read_snapshot) and as plain dataclasses (PhotoCard, CandidateCard, MatchTask, ...).
- :mod:`app.services.importing`: import_photos, import_labelled, detect_missing, embed_missing,
  ensure_thumbnail, relink, find_photos; ImportReport.
- :mod:`app.services.photo_metadata`: read_metadata, exif_date (EXIF size, date, GPS, camera).
- :mod:`app.services.decisions`: confirm, reject, skip, new_individual, identify, set_box,
  confirm_box, mark_junk, describe_merge, merge_individuals, rename_individual, resolve_individual,
  rejected_individuals, undo, redo, can_undo, can_redo, history; Done, HistoryEntry.
- :mod:`app.services.matching`: load_engine, require_engine, photo_embedding, gallery_rows,
  match_embedding, match_photo, match_file, embed_missing.
- :mod:`app.services.exporting`: export, export_identifications, export_kaggle, export_sightings,
  sightings.
- :mod:`app.services.models`: add_bundle, install_bundle, check_bundle, activate,
  list_model_versions; the catalog's model versions.
- :mod:`app.services.retraining` (a package): retrain, training_set_summary, find_resumable_run;
  its modules process (the training child process), training_python (probe, setting), dataset
  (training/held-out files), pipeline; activate and list_model_versions re-exported from models.
"""
