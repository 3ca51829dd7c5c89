"""Qt-free use cases over the catalog and the model: importing, decisions, matching, exporting.

Modules: :mod:`app.services.importing` (import_photos, import_labelled, embed_missing,
detect_missing, relink), :mod:`app.services.decisions` (confirm, reject, new_individual, skip,
identify, set_box, confirm_box, mark_junk, merge_individuals, rename_individual, undo, redo,
history), :mod:`app.services.matching` (match_photo, load_engine), :mod:`app.services.exporting`
(export_identifications, export_kaggle, export_sightings).
"""
