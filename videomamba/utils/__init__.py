"""Small helpers every layer may use (they import nothing of videomamba): distributed collectives and
process-group setup (:mod:`.dist`), atomic file writes (:mod:`.files`), autocast, batch moves and model
unwrapping (:mod:`.tensors`)."""
